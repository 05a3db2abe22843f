//! The command line every nanoflow service gets: `serve` (default), `run`, `list`, `graph`,
//! `openapi`.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};

use clap::{Parser, Subcommand, ValueEnum};

use super::serve;
use super::Runner;
use crate::config::AdminToken;
use crate::config::ServeConfig;
use crate::error::Error;
use crate::graph::short_type;
use crate::run::RunCtx;

#[derive(Debug, Parser)]
#[command(about = "A nanoflow workflow service", disable_help_subcommand = true)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve`'s flags, accepted without the subcommand since `serve` is the default.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the workflows' triggers (default).
    Serve(Box<ServeArgs>),
    /// Run one workflow in-process and print its output as JSON.
    Run {
        /// The workflow's name.
        workflow: String,
        /// The input: inline JSON, `@file.json`, or `-` for standard input.
        #[arg(long, short)]
        input: String,
    },
    /// List workflows with their nodes and triggers.
    List,
    /// Build the container image of every container-isolated node.
    #[cfg(feature = "container")]
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Inspect and re-drive journaled runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
        /// The journal file.
        // Its own id: `serve`'s flattened `--journal` (an `Option<String>`, accepting `off`) is
        // another argument with the same name, and clap keys values by id, not by flag.
        #[arg(
            id = "runs_journal",
            long = "journal",
            env = "NANOFLOW_JOURNAL",
            default_value = ".nanoflow/journal.db",
            global = true
        )]
        journal: std::path::PathBuf,
    },
    /// Print the OpenAPI 3.1 document of the HTTP triggers and the run API (as served at
    /// `GET /openapi.json`).
    Openapi,
    /// Print a workflow's graph.
    Graph {
        /// The workflow's name.
        workflow: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
}

#[cfg(feature = "container")]
#[derive(Debug, Subcommand)]
enum ImagesCommand {
    /// Build (or find, when unchanged) one `FROM scratch` image per node.
    Build {
        /// Build images for every node, not only those with `isolation = "container"`.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// Recent runs, newest first.
    List {
        /// Only this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this status: running, succeeded, failed (the dead-letter list) or blocked
        /// (parked because a deploy changed the graph under them).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One run with its per-node timeline, as JSON.
    Show {
        /// The run id.
        id: String,
    },
    /// Re-drive a failed or blocked run from where it stopped, in this process, and print its
    /// output.
    Retry {
        /// The run id.
        id: String,
        /// Forget what the run recorded and run it from its first step (for a run blocked
        /// because the graph changed).
        #[arg(long)]
        from_start: bool,
    },
    /// Start a new run of a recorded run's workflow and input that reuses the recorded
    /// outputs of the steps `--from` depends on and executes from that step on (journaled,
    /// linked to the original), in this process, and print its output.
    Fork {
        /// The run id.
        id: String,
        /// The step to execute from.
        #[arg(long)]
        from: String,
    },
    /// Cancel a run that has not ended (queued, waiting or blocked): it ends `cancelled`, after
    /// the compensations of the steps it completed. A run executing in a runner is cancelled
    /// through that runner's API (`POST /runs/{id}/cancel`).
    Cancel {
        /// The run id.
        id: String,
    },
    /// Re-execute a recorded run's input through this program's code, in-process and without
    /// recording a new run, and compare each step's output with the recorded one. Exits with
    /// 0 when every step reproduces, 1 otherwise.
    Replay {
        /// The run id.
        id: String,
        /// Steps fed their recorded outputs instead of running (nodes with side effects),
        /// comma-separated.
        #[arg(long, value_delimiter = ',')]
        stub: Vec<String>,
        /// Print the comparison as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

#[derive(Debug, Default, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "NANOFLOW_ADDR")]
    addr: Option<std::net::SocketAddr>,
    /// Largest request body (e.g. 1MiB); larger bodies get 413.
    #[arg(long, env = "NANOFLOW_MAX_BODY", value_parser = crate::rules::parse_size)]
    max_body: Option<usize>,
    /// Most runs in flight; past it requests get 503 with Retry-After.
    #[arg(long, env = "NANOFLOW_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// How long a shutdown (SIGINT/SIGTERM) waits for in-flight runs (e.g. 30s).
    #[arg(long, env = "NANOFLOW_GRACE", value_parser = crate::rules::parse_duration)]
    grace: Option<std::time::Duration>,
    /// How long a client may take to send a request's headers (e.g. 10s); then it is disconnected.
    #[arg(long, env = "NANOFLOW_HEADER_TIMEOUT", value_parser = crate::rules::parse_duration)]
    header_timeout: Option<std::time::Duration>,
    /// How long a client may take to send a request's body (e.g. 30s); then it gets 408.
    #[arg(long, env = "NANOFLOW_BODY_TIMEOUT", value_parser = crate::rules::parse_duration)]
    body_timeout: Option<std::time::Duration>,
    /// How long a keep-alive connection may stay open without a request (e.g. 60s).
    #[arg(long, env = "NANOFLOW_IDLE_TIMEOUT", value_parser = crate::rules::parse_duration)]
    idle_timeout: Option<std::time::Duration>,
    /// Open connections past which idle ones are closed (default: from the open files limit).
    #[arg(long, env = "NANOFLOW_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// How many finished runs `GET /runs/{id}` remembers without a journal.
    #[arg(long, env = "NANOFLOW_KEEP_RUNS")]
    keep_runs: Option<usize>,
    /// The journal file, or `off` to run without durability.
    #[arg(long, env = "NANOFLOW_JOURNAL")]
    journal: Option<String>,
    /// Finished runs older than this are pruned from the journal (e.g. 7d).
    #[arg(long, env = "NANOFLOW_RETENTION_AGE", value_parser = crate::rules::parse_duration)]
    retention_age: Option<std::time::Duration>,
    /// At most this many finished runs are kept in the journal.
    #[arg(long, env = "NANOFLOW_RETENTION_RUNS")]
    retention_runs: Option<u64>,
    /// This runner's id on a shared PostgreSQL journal (default: host, pid and a random suffix).
    #[arg(long, env = "NANOFLOW_RUNNER_ID")]
    runner_id: Option<String>,
    /// How long a runner's lease lasts without a heartbeat before others take its runs over
    /// (shared PostgreSQL journal; default 10s).
    #[arg(long, env = "NANOFLOW_LEASE", value_parser = crate::rules::parse_duration)]
    lease: Option<std::time::Duration>,
    /// Where nodes without an `isolation` option run: `process` or `container`.
    #[cfg(feature = "container")]
    #[arg(long, env = "NANOFLOW_ISOLATION", value_parser = ["process", "container"])]
    isolation: Option<String>,
    /// The NATS server of queue triggers and `publish` (e.g. nats://127.0.0.1:4222).
    #[arg(long, env = "NANOFLOW_NATS_URL")]
    nats_url: Option<String>,
    /// The PostgreSQL database of database-event triggers (e.g. postgres://app@127.0.0.1/shop).
    #[arg(long, env = "NANOFLOW_DATABASE_URL")]
    database_url: Option<String>,
    /// Record Prometheus metrics and serve them at `GET /metrics`: `on` (default) or `off`.
    #[arg(long, env = "NANOFLOW_METRICS", value_parser = ["on", "off"])]
    metrics: Option<String>,
    /// The token that guards the dashboard, /runs, /metrics, /events and /workflows.
    #[arg(long, env = "NANOFLOW_ADMIN_TOKEN", hide_env_values = true, value_parser = admin_token)]
    admin_token: Option<AdminToken>,
    /// Serve the dashboard and API without a token on a non-loopback address.
    #[arg(long, env = "NANOFLOW_INSECURE_ADMIN")]
    insecure_admin: bool,
}

fn admin_token(text: &str) -> Result<AdminToken, String> {
    AdminToken::new(text).map_err(|e| e.to_string())
}

impl ServeArgs {
    fn config(&self) -> Result<ServeConfig, Error> {
        let mut c = ServeConfig::default();
        if let Some(a) = self.addr {
            c.addr = a;
        }
        if let Some(b) = self.max_body {
            c.max_body = b;
        }
        if let Some(m) = self.max_in_flight {
            if m == 0 {
                return Err(Error::Config("`--max-in-flight` must be at least 1".into()));
            }
            c.max_in_flight = m;
        }
        if let Some(g) = self.grace {
            c.grace = g;
        }
        for (flag, value, field) in [
            (
                "--header-timeout",
                self.header_timeout,
                &mut c.header_timeout,
            ),
            ("--body-timeout", self.body_timeout, &mut c.body_timeout),
            ("--idle-timeout", self.idle_timeout, &mut c.idle_timeout),
        ] {
            if let Some(d) = value {
                if d.is_zero() {
                    return Err(Error::Config(format!("`{flag}` must be longer than 0")));
                }
                *field = d;
            }
        }
        if let Some(m) = self.max_connections {
            if m == 0 {
                return Err(Error::Config(
                    "`--max-connections` must be at least 1".into(),
                ));
            }
            c.max_connections = Some(m);
        }
        if let Some(k) = self.keep_runs {
            c.keep_runs = k;
        }
        match self.journal.as_deref() {
            None => {}
            Some("off" | "none" | "") => c.journal = None,
            Some(path) => c.journal = Some(path.into()),
        }
        if let Some(a) = self.retention_age {
            c.retention.max_age = a;
        }
        if let Some(r) = self.retention_runs {
            c.retention.max_runs = r;
        }
        if let Some(id) = self.runner_id.as_deref().filter(|id| !id.is_empty()) {
            c.runner_id = Some(id.to_owned());
        }
        if let Some(lease) = self.lease {
            if lease < std::time::Duration::from_secs(1) {
                return Err(Error::Config("`--lease` must be at least 1s".into()));
            }
            c.lease = lease;
        }
        #[cfg(feature = "container")]
        if self.isolation.as_deref() == Some("container") {
            c.isolation = crate::isolation::IsolationMode::Container;
        }
        c.nats_url = self.nats_url.clone().filter(|u| !u.is_empty());
        c.database_url = self.database_url.clone().filter(|u| !u.is_empty());
        if let Some(m) = &self.metrics {
            c.metrics = m == "on";
        }
        c.admin_token.clone_from(&self.admin_token);
        c.insecure_admin = self.insecure_admin;
        Ok(c)
    }
}

pub(super) async fn main<I, T>(runner: Runner, args: I) -> Result<(), Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    runner.check()?;
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return Ok(());
        }
        Err(e) => {
            let text = e.render().to_string();
            return Err(Error::Config(
                text.trim_start_matches("error: ").trim_end().to_owned(),
            ));
        }
    };
    match cli.command.unwrap_or(Command::Serve(Box::new(cli.serve))) {
        Command::Serve(args) => {
            let config = args.config()?;
            // Refused before anything is set up or logged.
            crate::admin::check_exposure(&config)?;
            let _export = serve::init_logging()?;
            let server = runner.start(config).await?;
            serve::shutdown_signal().await;
            tracing::info!("shutting down: no new runs; waiting for in-flight runs");
            server.shutdown().await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Run { workflow, input } => run(&runner, &workflow, &input).await,
        Command::Runs { command, journal } => runs(runner, command, journal).await,
        #[cfg(feature = "container")]
        Command::Images {
            command: ImagesCommand::Build { all },
        } => {
            let _export = serve::init_logging()?;
            let mode = if all {
                crate::isolation::IsolationMode::Container
            } else {
                crate::isolation::IsolationMode::Process
            };
            let docker = crate::isolation::connect().await?;
            let workflows: Vec<_> = runner.workflows.values().cloned().collect();
            let config = crate::isolation::ContainerConfig::default();
            let built = crate::isolation::build_images(&docker, &workflows, mode, &config).await?;
            if built.is_empty() {
                print_stdout("no node runs in a container; mark nodes with `isolation = \"container\"` or pass `--all`\n");
            }
            for b in built {
                let what = if b.built { "built" } else { "unchanged" };
                print_stdout(&format!(
                    "{:<24} {:<60} {what} ({:.1} MB)\n",
                    b.node,
                    b.tag,
                    b.size as f64 / 1e6
                ));
            }
            Ok(())
        }
        Command::List => {
            print_stdout(&list(&runner));
            Ok(())
        }
        Command::Openapi => {
            let workflows = runner.workflows.values().map(|wf| wf.as_ref());
            let document = crate::triggers::openapi::document(
                &crate::triggers::openapi::service_name(),
                workflows,
            );
            print_stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&document).unwrap_or_default()
            ));
            Ok(())
        }
        Command::Graph { workflow, format } => {
            let wf = runner
                .get(&workflow)
                .ok_or_else(|| Error::UnknownWorkflow(workflow.clone()))?;
            let graph = wf.graph();
            print_stdout(&match format {
                GraphFormat::Mermaid => graph.to_mermaid(),
                GraphFormat::Dot => graph.to_dot(),
            });
            Ok(())
        }
    }
}

pub(super) fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn read_input(input: &str) -> Result<Vec<u8>, Error> {
    if input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("reading the input from standard input", e))?;
        Ok(buf)
    } else if let Some(path) = input.strip_prefix('@') {
        std::fs::read(path).map_err(|e| Error::io(format!("reading the input file `{path}`"), e))
    } else {
        Ok(input.as_bytes().to_vec())
    }
}

async fn run(runner: &Runner, workflow: &str, input: &str) -> Result<(), Error> {
    let wf = runner
        .get(workflow)
        .ok_or_else(|| Error::UnknownWorkflow(workflow.to_owned()))?;
    let bytes = read_input(input)?;
    let name = wf.graph().name;
    let future = wf
        .start(RunCtx::new(name), &bytes)
        .map_err(|error| Error::InvalidInput {
            workflow: name,
            error,
        })?;
    let output = future.await?;
    print_json(&output);
    Ok(())
}

/// Prints a run's JSON output, pretty.
fn print_json(output: &[u8]) {
    let value: serde_json::Value =
        serde_json::from_slice(output).unwrap_or(serde_json::Value::Null);
    print_stdout(&format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    ));
}

pub(crate) fn list(runner: &Runner) -> String {
    let mut out = String::new();
    for wf in runner.workflows.values() {
        let g = wf.graph();
        out.push_str(&format!(
            "{}: {} -> {}\n",
            g.name,
            short_type(g.input_type),
            short_type(g.output_type)
        ));
        if !g.doc.is_empty() {
            for line in g.doc.lines() {
                out.push_str(&format!("  # {line}\n"));
            }
        }
        for (i, step) in g.steps.iter().enumerate() {
            let alias = if step.name == step.node {
                String::new()
            } else {
                format!(" (node {})", step.node)
            };
            // `node`, or `condition` (of an `if`), or `workflow` (a sub-workflow).
            let kind = step.kind.as_str();
            let each = if g.map_of(i).is_some() {
                " (each item)"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {kind} {}{alias}{each}: {} -> {}\n",
                step.name,
                short_type(step.input_type),
                short_type(step.output_type)
            ));
        }
        if g.triggers.is_empty() {
            out.push_str("  trigger: none (run with `run` or from code)\n");
        }
        let nats_url = std::env::var("NANOFLOW_NATS_URL").ok();
        let database_url = std::env::var("NANOFLOW_DATABASE_URL").ok();
        for t in &g.triggers {
            out.push_str(&format!("  trigger: {t}\n"));
            if let Some(why) =
                crate::triggers::inactive(t, nats_url.as_deref(), database_url.as_deref())
            {
                out.push_str(&format!("    inactive: {why}\n"));
            }
            if let crate::triggers::TriggerDef::Cron { schedule, tz, .. } = t {
                if let Ok(s) = crate::triggers::cron::Schedule::new(schedule, *tz) {
                    let next: Vec<String> = s.upcoming(3).iter().map(|t| t.to_rfc3339()).collect();
                    out.push_str(&format!("    next: {}\n", next.join(", ")));
                }
            }
        }
    }
    out
}

async fn runs(
    runner: Runner,
    command: RunsCommand,
    journal: std::path::PathBuf,
) -> Result<(), Error> {
    use crate::journal::RunFilter;
    use crate::run::RunId;
    use crate::runs::RunStatus;

    let shared = journal
        .to_str()
        .is_some_and(|j| j.starts_with("postgres://") || j.starts_with("postgresql://"));
    if !shared && !journal.exists() {
        return Err(Error::Config(format!(
            "no journal at `{}`; pass `--journal PATH`",
            journal.display()
        )));
    }
    let parse_id = |id: &str| id.parse::<RunId>().map_err(Error::Config);
    let config = ServeConfig {
        journal: Some(journal),
        ..ServeConfig::default()
    };
    runner.check()?;
    let app = crate::ingress::App::new(&runner.workflows, &config, None)?;
    let j = app.journal.clone();
    match command {
        RunsCommand::List {
            workflow,
            status,
            limit,
        } => {
            let status = match status.as_deref() {
                None => None,
                Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
                    Error::Config(format!(
                        "unknown status `{text}`; expected running, succeeded, failed or blocked"
                    ))
                })?),
            };
            let list = j
                .list_runs(RunFilter {
                    workflow,
                    status,
                    before: None,
                    limit,
                    search: None,
                })
                .await?;
            let mut out = String::new();
            for r in list {
                let detail = match (&r.error, r.status) {
                    (Some(e), _) => format!(
                        "  {}: {}",
                        e.get("node")
                            .or_else(|| e.get("step"))
                            .and_then(|n| n.as_str())
                            .unwrap_or("-"),
                        e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                    ),
                    _ => String::new(),
                };
                out.push_str(&format!(
                    "{}  {:<10} {:<9}{detail}\n",
                    r.run_id,
                    r.workflow,
                    r.status.as_str()
                ));
            }
            print_stdout(&out);
            Ok(())
        }
        RunsCommand::Show { id } => {
            let run_id = parse_id(&id)?;
            let run = j
                .get_run(run_id)
                .await?
                .ok_or_else(|| Error::Config(format!("no run `{id}` in the journal")))?;
            print_stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&run).unwrap_or_default()
            ));
            Ok(())
        }
        RunsCommand::Retry { id, from_start } => {
            let run_id = parse_id(&id)?;
            let task = if from_start {
                app.retry_from_start(&j, run_id).await?
            } else {
                let Some(record) = j.reopen(run_id).await? else {
                    return Err(Error::Config(format!(
                        "run `{id}` is not a failed run in the journal, nor a blocked one"
                    )));
                };
                app.resume(record).await?
            };
            let Some(task) = task else {
                return Err(super::replay::not_driven(&j, run_id).await);
            };
            let output = task
                .await
                .map_err(|e| Error::Config(format!("the run was aborted: {e}")))??;
            print_json(&output);
            Ok(())
        }
        RunsCommand::Replay { id, stub, json } => {
            let run_id = parse_id(&id)?;
            super::replay::replay(&app, &j, run_id, &stub, json).await
        }
        RunsCommand::Fork { id, from } => {
            let run_id = parse_id(&id)?;
            let (forked, task) = app.fork(&j, run_id, &from).await?;
            eprintln!("forked run {forked} from {run_id} at step `{from}`");
            let output = task
                .await
                .map_err(|e| Error::Config(format!("the run was aborted: {e}")))??;
            print_json(&output);
            Ok(())
        }
        RunsCommand::Cancel { id } => {
            use crate::ingress::flow::Cancelling;
            let run_id = parse_id(&id)?;
            match app.cancel_run(run_id).await? {
                Cancelling::Unknown => Err(Error::Config(format!("no run `{id}` in the journal"))),
                Cancelling::Finished(status) => Err(Error::Config(format!(
                    "run `{id}` is {} already; only a run that has not ended can be cancelled",
                    status.as_str()
                ))),
                Cancelling::Elsewhere | Cancelling::Stopping => Err(Error::Config(format!(
                    "run `{id}` is running in a runner; cancel it through that runner's API: POST /runs/{id}/cancel"
                ))),
                Cancelling::Ended => {
                    print_stdout(&format!("cancelled {run_id}\n"));
                    Ok(())
                }
                Cancelling::Compensating(task) => {
                    // It waited: resumed here, it runs its compensations and ends cancelled.
                    if let Some(task) = task {
                        let _ = task.await;
                    }
                    print_stdout(&format!("cancelled {run_id} (its compensations ran)\n"));
                    Ok(())
                }
            }
        }
    }
}
