//! `shoal`: one binary for every Shoal role and tool.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use shoal_loadgen::hitrate::{self, Capacity};
use shoal_loadgen::trace::Trace;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Shoal: a CDN-style distributed caching tier"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a request trace through every cache policy and print hit ratios.
    Hitrate {
        /// Trace file (`timestamp,object_id,size` CSV, gzip or plain).
        #[arg(long)]
        trace: PathBuf,
        /// Capacity: bytes (`64MiB`), share of unique bytes (`1%`), objects (`1435obj`) or
        /// share of distinct objects (`1%obj`). Comma-separated for several runs.
        #[arg(long, value_delimiter = ',', required = true)]
        capacity: Vec<String>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Hitrate {
            trace,
            capacity,
            json,
        } => {
            let caps = capacity
                .iter()
                .map(|c| Ok((c.clone(), c.parse::<Capacity>()?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let trace = Trace::load(&trace)?;
            let report = hitrate::run(&trace, &caps)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("encoding the report")?
                );
            } else {
                print!("{}", hitrate::render(&report));
            }
            Ok(())
        }
    }
}
