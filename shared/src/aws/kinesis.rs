//! kinesis adapter (being written).
