"""One module per figure of ``statbus bench``: startup, hotpath, throughput, recovery, memory."""
