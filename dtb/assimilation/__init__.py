"""Data assimilation: ensemble Kalman filter, recorded BOLD and fit metrics."""
