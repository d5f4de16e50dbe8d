//! firehose adapter (being written).
