"""What a finished run offers beyond its decision: calibration, label shift, novel images."""
