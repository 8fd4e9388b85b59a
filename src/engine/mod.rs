//! Loaded models, keep_alive timers and eviction, and the scheduler (to be written).
