//! server — to be written.
