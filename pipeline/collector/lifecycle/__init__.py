"""The collector process's life: started detached, its pidfile lock, the run's identity, its ready file,
its socket directories, its stop signals."""
