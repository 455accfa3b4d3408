"""The collector process's life: started detached, its pidfile lock, its ready file, its socket directories, its stop signals."""
