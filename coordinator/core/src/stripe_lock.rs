//! Reader/writer range locks on stripes.
