//! Parity math: XOR and GF(2^8) P+Q.
