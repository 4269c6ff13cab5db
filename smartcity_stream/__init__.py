"""The stream worker: the speed layer and the only path by which data reaches the lake."""
