//! Tests of the test components.
