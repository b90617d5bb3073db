"""The six numbered panes of the console, and the table they share."""
