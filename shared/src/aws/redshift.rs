//! redshift adapter (being written).
