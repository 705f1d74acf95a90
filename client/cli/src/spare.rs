//! `dagraid spare ...`: the coordinator's hot-spare pool, like `raidctl -a` / `-r`.

use anyhow::{anyhow, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::{output, print_json, size_arg};
use dagraid_client::size::Size;
use dagraid_client::{Client, Spare};

/// `dagraid spare ...`.
#[derive(Debug, Subcommand)]
pub enum SpareCommand {
    /// Add a hot spare: a component on a storage node, labelled as a spare, that a volume
    /// takes when one of its columns fails (same block size, at least as large, on a node
    /// holding none of its columns).
    Add {
        /// The storage node that holds the spare.
        #[arg(long)]
        node: String,
        /// Usable size, rounded up to whole blocks [default: the largest column of any volume,
        /// so the spare fits them all].
        #[arg(long, value_parser = size_arg)]
        size: Option<u64>,
        /// Block size [default: 4KiB]; a volume takes only a spare of its own block size.
        #[arg(long, value_parser = size_arg)]
        block_size: Option<u64>,
    },
    /// Remove a free spare from the pool and delete its component (refused while a volume
    /// uses it).
    Remove {
        /// The spare's id, as `dagraid spare list` shows it.
        id: String,
    },
    /// List the pool: every spare, its node, size, and the volume column using it.
    List,
}

/// Runs one `dagraid spare` verb.
pub(super) async fn run(json: bool, client: &Client, command: &SpareCommand) -> anyhow::Result<()> {
    match command {
        SpareCommand::Add {
            node,
            size,
            block_size,
        } => {
            let block_size = block_size
                .map(|b| {
                    u32::try_from(b).map_err(|_| anyhow!("--block-size {} is too large", Size(b)))
                })
                .transpose()?
                .unwrap_or(0);
            let size = match size {
                Some(s) => *s,
                None => largest_column(client).await?,
            };
            let spare = client.add_spare(node, size, block_size).await?;
            if json {
                print_json(&spare_json(&spare));
            } else {
                println!(
                    "added spare {} on {}: {} ({} blocks of {})",
                    spare.id,
                    spare.node_id,
                    Size(spare.size_bytes),
                    spare.block_count,
                    Size(u64::from(spare.block_size))
                );
            }
        }
        SpareCommand::Remove { id } => {
            client.remove_spare(id).await?;
            if json {
                print_json(&json!({ "removed": id }));
            } else {
                println!("removed spare {id}");
            }
        }
        SpareCommand::List => {
            let spares = client.list_spares().await?;
            if json {
                let list: Vec<Value> = spares.iter().map(spare_json).collect();
                print_json(&json!({ "spares": list }));
            } else {
                print!("{}", spare_table(&spares));
            }
        }
    }
    Ok(())
}

/// The size of the largest column of any volume (`spare add` without --size).
async fn largest_column(client: &Client) -> anyhow::Result<u64> {
    let volumes = client.list_volumes().await?;
    match volumes
        .iter()
        .flat_map(|v| v.components.iter().map(|c| c.size_bytes))
        .max()
    {
        Some(size) if size > 0 => Ok(size),
        _ => bail!("there is no volume to size the spare after: give --size"),
    }
}

/// One spare as JSON (`dagraid spare list --json`, `spare add --json`).
pub fn spare_json(s: &Spare) -> Value {
    json!({
        "id": s.id,
        "node": s.node_id,
        "address": s.node_address,
        "size_bytes": s.size_bytes,
        "block_size": s.block_size,
        "block_count": s.block_count,
        "volume": s.in_use.as_ref().map(|u| u.volume.clone()),
        "column": s.in_use.as_ref().map(|u| u.column),
        "reachable": s.reachable,
    })
}

/// `dagraid spare list`: one line per spare.
pub fn spare_table(spares: &[Spare]) -> String {
    if spares.is_empty() {
        return "no spares\n".to_owned();
    }
    let rows: Vec<Vec<String>> = spares
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.node_id.clone(),
                Size(s.size_bytes).to_string(),
                Size(u64::from(s.block_size)).to_string(),
                s.in_use.as_ref().map_or_else(
                    || "free".to_owned(),
                    |u| format!("{} column {}", u.volume, u.column),
                ),
                if s.reachable { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    output::table(
        &["ID", "NODE", "SIZE", "BLOCK SIZE", "USED BY", "REACHABLE"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagraid_client::SpareUse;

    fn spare(id: &str, in_use: Option<SpareUse>, reachable: bool) -> Spare {
        Spare {
            id: id.into(),
            node_id: "node6".into(),
            node_address: "127.0.0.1:7006".into(),
            block_size: 4096,
            block_count: 65536,
            size_bytes: 256 << 20,
            in_use,
            reachable,
        }
    }

    #[test]
    fn the_table_says_who_uses_each_spare() {
        assert_eq!(spare_table(&[]), "no spares\n");
        let t = spare_table(&[
            spare("spare-a", None, true),
            spare(
                "spare-b",
                Some(SpareUse {
                    volume: "vol0".into(),
                    column: 3,
                }),
                false,
            ),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "ID       NODE   SIZE     BLOCK SIZE  USED BY        REACHABLE"
        );
        assert_eq!(
            lines[1],
            "spare-a  node6  256 MiB  4 KiB       free           yes"
        );
        assert_eq!(
            lines[2],
            "spare-b  node6  256 MiB  4 KiB       vol0 column 3  no"
        );
        let j = spare_json(&spare("spare-a", None, true));
        assert_eq!(j["volume"], Value::Null);
        assert_eq!(j["size_bytes"], 256 << 20);
        assert_eq!(j["node"], "node6");
    }
}
