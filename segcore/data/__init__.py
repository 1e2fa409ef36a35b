"""Data sources: synthetic scenes, raster reading, SLIC superpixels, shards and the training datasets."""
