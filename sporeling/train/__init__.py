"""sporeling.train: training on the device (issue 5). So far: the table of backward rules (vjp.py)."""
