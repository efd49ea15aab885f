"""The three stages: backbone (coarse tokens), super-resolution (62 passes), codec (DAC decoder)."""
