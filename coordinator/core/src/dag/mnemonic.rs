//! Node mnemonics: RAIDframe's short names, kept because they are the span names an operator reads.

use std::fmt;

/// What a node does, in RAIDframe's vocabulary. Every firing of a node is a tracing span of this
/// name, so the set is closed and each name is a `&'static str`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mnemonic {
    /// No-op: the header, or a join/fork point.
    Nil,
    /// The commit node: after it fires, the DAG can only roll forward.
    Cmt,
    /// The terminator: reaching it completes a forward DAG.
    Trm,
    /// Plain disk read.
    R,
    /// Plain disk write.
    W,
    /// Read old data (small write).
    Rod,
    /// Read old parity.
    Rop,
    /// Read old Q.
    Roq,
    /// Read user data (degraded read).
    Rud,
    /// Read recovery data: the surviving units of a degraded stripe.
    Rrd,
    /// Read parity on the degraded path.
    Rp,
    /// Read Q on the degraded path (RAID 6).
    Rq,
    /// Parity XOR.
    Xor,
    /// Recovery XOR (rebuilds a lost unit).
    Xrc,
    /// Reed-Solomon Q syndrome, its update, or a Q-based recovery.
    Q,
    /// Write new data.
    Wnd,
    /// Write new parity.
    Wnp,
    /// Write new Q.
    Wnq,
    /// Mirror read (from the less loaded copy).
    Rmir,
    /// Write the primary copy.
    Wpd,
    /// Write the secondary copy.
    Wsd,
    /// Overlay new user bytes onto old block contents (partial-block read-modify-write).
    Ovl,
}

impl Mnemonic {
    /// Its position in [`Mnemonic::ALL`] (for per-mnemonic counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Every mnemonic, in declaration order.
    pub const ALL: [Mnemonic; 22] = [
        Mnemonic::Nil,
        Mnemonic::Cmt,
        Mnemonic::Trm,
        Mnemonic::R,
        Mnemonic::W,
        Mnemonic::Rod,
        Mnemonic::Rop,
        Mnemonic::Roq,
        Mnemonic::Rud,
        Mnemonic::Rrd,
        Mnemonic::Rp,
        Mnemonic::Rq,
        Mnemonic::Xor,
        Mnemonic::Xrc,
        Mnemonic::Q,
        Mnemonic::Wnd,
        Mnemonic::Wnp,
        Mnemonic::Wnq,
        Mnemonic::Rmir,
        Mnemonic::Wpd,
        Mnemonic::Wsd,
        Mnemonic::Ovl,
    ];

    /// The name, as used for the node's span.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mnemonic::Nil => "Nil",
            Mnemonic::Cmt => "Cmt",
            Mnemonic::Trm => "Trm",
            Mnemonic::R => "R",
            Mnemonic::W => "W",
            Mnemonic::Rod => "Rod",
            Mnemonic::Rop => "Rop",
            Mnemonic::Roq => "Roq",
            Mnemonic::Rud => "Rud",
            Mnemonic::Rrd => "Rrd",
            Mnemonic::Rp => "Rp",
            Mnemonic::Rq => "Rq",
            Mnemonic::Xor => "Xor",
            Mnemonic::Xrc => "Xrc",
            Mnemonic::Q => "Q",
            Mnemonic::Wnd => "Wnd",
            Mnemonic::Wnp => "Wnp",
            Mnemonic::Wnq => "Wnq",
            Mnemonic::Rmir => "Rmir",
            Mnemonic::Wpd => "Wpd",
            Mnemonic::Wsd => "Wsd",
            Mnemonic::Ovl => "Ovl",
        }
    }

    /// Whether this mnemonic names a disk read.
    pub const fn is_read(self) -> bool {
        matches!(
            self,
            Mnemonic::R
                | Mnemonic::Rod
                | Mnemonic::Rop
                | Mnemonic::Roq
                | Mnemonic::Rud
                | Mnemonic::Rrd
                | Mnemonic::Rp
                | Mnemonic::Rq
                | Mnemonic::Rmir
        )
    }

    /// Whether this mnemonic names a disk write.
    pub const fn is_write(self) -> bool {
        matches!(
            self,
            Mnemonic::W
                | Mnemonic::Wnd
                | Mnemonic::Wnp
                | Mnemonic::Wnq
                | Mnemonic::Wpd
                | Mnemonic::Wsd
        )
    }
}

impl fmt::Display for Mnemonic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
