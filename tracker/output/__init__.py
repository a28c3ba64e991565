"""What a run writes and prints: the log files, run.json's contents and the console lines."""
