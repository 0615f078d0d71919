"""Lightning callbacks: statistics, plots and maintenance hooks that runs add through conf/callbacks."""
