//! scipy.ndimage-compatible filters shared by several corruptions.
