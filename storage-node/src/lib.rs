//! The dagraid storage node.
