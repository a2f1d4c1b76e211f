"""What runs on a device: the scoring server and its backends."""
