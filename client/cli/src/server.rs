//! `dagraid node` and `dagraid coordinator`: the storage node and the coordinator in this
//! executable, with exactly the flags of the `dagraid-node` and `dagraid-coordinator` binaries
//! (the same clap definitions, [`dagraid_node::config::Args`] and
//! [`dagraid_coordinator::config::Args`]) and the same process ([`dagraid_node::run_command`],
//! [`dagraid_coordinator::run_command`]). `dagraid up` runs its children this way, so a cluster
//! needs no other executable.
//!
//! Their flags share names with the tool's global flags (`--data-dir`, `--token`), so they are
//! parsed apart: [`run_if_server`] looks at the first argument before [`crate::Args`] is parsed,
//! and hands everything after it to the server's own parser.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser as _;

/// The arguments of `dagraid node` / `dagraid coordinator` as `dagraid --help` lists them: they
/// are parsed by the server's own parser ([`run_if_server`]), never by [`crate::Args`].
#[derive(Debug, Clone, clap::Args)]
#[command(disable_help_flag = true)]
pub struct ServerArgs {
    /// The server's flags (see `dagraid node --help`, `dagraid coordinator --help`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FLAGS"
    )]
    pub flags: Vec<OsString>,
}

/// Which server the first argument names, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `dagraid node`.
    Node,
    /// `dagraid coordinator`.
    Coordinator,
}

impl Server {
    /// `argv[1]`, when it is `node` or `coordinator`.
    pub fn named_by(argv: &[OsString]) -> Option<Self> {
        match argv.get(1)?.to_str()? {
            "node" => Some(Self::Node),
            "coordinator" => Some(Self::Coordinator),
            _ => None,
        }
    }
}

/// Runs the server `argv` names (`dagraid node ...`, `dagraid coordinator ...`) to its end and
/// returns its exit status; `None` for every other command line. A bad flag prints the server's
/// usage error and exits with clap's status, as the server binaries do.
pub fn run_if_server(argv: &[OsString]) -> Option<ExitCode> {
    let server = Server::named_by(argv)?;
    let rest = argv.iter().skip(2).cloned();
    Some(match server {
        Server::Node => {
            let args = dagraid_node::config::Args::parse_from(
                std::iter::once(OsString::from("dagraid node")).chain(rest),
            );
            dagraid_node::run_command(args)
        }
        Server::Coordinator => {
            let args = dagraid_coordinator::config::Args::parse_from(
                std::iter::once(OsString::from("dagraid coordinator")).chain(rest),
            );
            dagraid_coordinator::run_command(args)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_the_first_argument_names_a_server() {
        assert_eq!(
            Server::named_by(&argv(&["dagraid", "node", "--listen", "x"])),
            Some(Server::Node)
        );
        assert_eq!(
            Server::named_by(&argv(&["dagraid", "coordinator"])),
            Some(Server::Coordinator)
        );
        assert_eq!(
            Server::named_by(&argv(&["dagraid", "--json", "node"])),
            None
        );
        assert_eq!(Server::named_by(&argv(&["dagraid", "status"])), None);
        assert_eq!(Server::named_by(&argv(&["dagraid"])), None);
    }

    #[test]
    fn the_servers_flags_parse_as_their_binaries_do() {
        let node = dagraid_node::config::Args::try_parse_from([
            "dagraid node",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/n1",
            "--node-id",
            "node1",
            "--insecure",
        ])
        .unwrap();
        let config = node.to_config().unwrap();
        assert_eq!(config.node_id.as_deref(), Some("node1"));
        let err = dagraid_node::config::Args::try_parse_from(["dagraid node"])
            .unwrap()
            .to_config()
            .unwrap_err();
        assert!(err.to_string().contains("--data-dir is required"), "{err}");
        let coordinator = dagraid_coordinator::config::Args::try_parse_from([
            "dagraid coordinator",
            "--data-dir",
            "/tmp/c",
            "--node",
            "node1=127.0.0.1:7001",
            "--insecure",
        ])
        .unwrap();
        assert_eq!(coordinator.into_config().unwrap().nodes.len(), 1);
    }
}
