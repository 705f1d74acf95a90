//! RAID layouts: mapping volume addresses to component addresses.
