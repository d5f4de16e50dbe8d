//! [`Stack::start`], one named step per thing it brings up, in the order the module docs of
//! [`crate::stack`] give: moto and the emulator proxy, the template's model, PostgreSQL and the
//! Data API — shared by every region — then per region ([`start_region`]) the resources in
//! moto with their notification relays, the functions, the HTTP API, the event source mappings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::functions::{self, Clients};
use super::resources::{self, Created, ResourceClients};
use super::template::{self as template, LocalNames, Model};
use super::{
    CHAOS_PARAMETER_DEFAULTS, LOCAL_PARAMETER_DEFAULTS, Stack, StackClients, StackError,
    StackOptions, StackRegion, absolute, io, reap_stale, wipe,
};
use crate::emulators::chaos::Chaos;
use crate::emulators::dataapi::{self, DataApiOptions, PgConfig};
use crate::emulators::esm::{KinesisMapping, SqsMapping};
use crate::emulators::http::{self, Api, BoundRoute};
use crate::emulators::lambda::LocalFunction;
use crate::emulators::motoproxy::{self, Proxy};
use crate::emulators::notify::Relay;
use crate::emulators::postgres::{Postgres, PostgresError};
use crate::shutdown::{self, Shutdown};

/// The stack's background tasks and the signal that stops them.
struct Tasks {
    shutdown: Shutdown,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

/// The in-process functions by logical ID.
type Functions = BTreeMap<String, Arc<LocalFunction>>;

impl Stack {
    /// Starts everything. On error, whatever was started is stopped again.
    pub async fn start(opts: StackOptions) -> Result<Stack, StackError> {
        let run_dir = absolute(&opts.run_dir)?;
        let moto = start_moto(&run_dir).await?;
        let (trigger, shutdown) = shutdown::channel();
        let mut tasks = Tasks {
            shutdown,
            handles: Vec::new(),
        };
        let chaos = opts.chaos.clone().map(|c| Arc::new(Chaos::new(c)));
        let (aws_endpoint, functions_endpoint) =
            start_proxies(&moto, chaos.as_ref(), &mut tasks).await?;
        let home = LocalNames::local(&aws_endpoint);

        // The templates first: a mistake there should not cost a PostgreSQL start.
        let mut planned = vec![(load_model(&opts, &home, &[], chaos.as_deref())?, home)];
        if let Some(region) = &opts.second_region {
            let names = second_region_names(&aws_endpoint, region, &planned[0].1)?;
            // Deployed the way a second region is: the warehouse lives in the home region.
            let elsewhere = [("RedshiftRegion".to_owned(), planned[0].1.region.clone())];
            planned.push((
                load_model(&opts, &names, &elsewhere, chaos.as_deref())?,
                names,
            ));
        }
        let pg = start_postgres(run_dir.join("pg")).await?;
        let (data_listener, data_api_url) = bind_data_api().await?;
        // Redshift's COPY reads S3 with AWS's own retries; so does the emulator standing in. It
        // is the warehouse's, so it sits in the home region.
        let home_sdk = testkit::sdk_config_in(&aws_endpoint, &planned[0].1.region).await;
        let copy_s3 = stack_clients(&home_sdk, &data_api_url).s3;
        serve_data_api(
            data_listener,
            &pg,
            copy_s3,
            &opts,
            chaos.as_ref(),
            &mut tasks,
        )?;
        let endpoints = Endpoints {
            aws: aws_endpoint.clone(),
            functions: functions_endpoint,
            data_api: data_api_url.clone(),
        };
        let mut regions = Vec::with_capacity(planned.len());
        for (i, (model, names)) in planned.into_iter().enumerate() {
            // Only the home region's API takes the requested port.
            let port = if i == 0 { opts.api_port } else { None };
            let region = start_region(model, names, &endpoints, port, chaos.as_ref(), &mut tasks);
            regions.push(region.await?);
        }

        let lambda_url = serve_invoke(&regions, &mut tasks).await?;
        let stack = Stack {
            run_dir,
            moto: Some(moto),
            pg: Some(pg),
            trigger,
            tasks: tasks.handles,
            data_api_url,
            aws_endpoint,
            lambda_url,
            regions,
            chaos,
        };
        stack.write_stack_file()?;
        if let Some(c) = &stack.chaos {
            c.arm();
            tracing::info!(chaos = %c.config(), "chaos_armed");
        }
        for r in &stack.regions {
            tracing::info!(region = %r.name, api = %r.api_url, "region_started");
        }
        tracing::info!(api = %stack.api_url(), data_api = %stack.data_api_url, "stack_started");
        Ok(stack)
    }
}

/// Lambda's Invoke API for every region's functions (by name and by ARN); its URL.
async fn serve_invoke(regions: &[StackRegion], tasks: &mut Tasks) -> Result<String, StackError> {
    let mut fns = crate::emulators::invoke::Functions::new();
    for r in regions {
        for f in r.functions().values() {
            fns.insert(f.name.clone(), f.clone());
            fns.insert(f.arn.clone(), f.clone());
        }
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(io("binding the Lambda Invoke API"))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(io("Lambda Invoke API address"))?
    );
    let sd = tasks.shutdown.clone();
    tasks.handles.push(tokio::spawn(async move {
        if let Err(e) = crate::emulators::invoke::serve(listener, fns, sd.wait()).await {
            tracing::error!(error = %e, "lambda_invoke_api_failed");
        }
    }));
    Ok(url)
}

/// Where the emulators listen: moto through the clean proxy (the stack's own clients), moto
/// through the functions' proxy (with chaos: the fault-injecting one), and the Data API.
struct Endpoints {
    aws: String,
    functions: String,
    data_api: String,
}

/// The names of the second region, which must be another region than the home one.
fn second_region_names(
    aws_endpoint: &str,
    region: &str,
    home: &LocalNames,
) -> Result<LocalNames, StackError> {
    if !caudal_core::config::is_region_name(region) || region == home.region {
        return Err(StackError::Wiring(format!(
            "second region {region:?}: needs a region name other than the home region {}",
            home.region
        )));
    }
    Ok(LocalNames::in_region(aws_endpoint, region))
}

/// One region's part: its resources in moto (in that region), notification relays, functions
/// (with clients in that region; the Data API is the one warehouse's), HTTP API and event
/// source mappings.
async fn start_region(
    model: Model,
    names: LocalNames,
    endpoints: &Endpoints,
    api_port: Option<u16>,
    chaos: Option<&Arc<Chaos>>,
    tasks: &mut Tasks,
) -> Result<StackRegion, StackError> {
    let sdk = testkit::sdk_config_in(&endpoints.aws, &names.region).await;
    let fn_clients = Clients {
        aws: testkit::sdk_config_in(&endpoints.functions, &names.region).await,
        redshift_data_url: endpoints.data_api.clone(),
    };
    let clients = stack_clients(&sdk, &endpoints.data_api);
    let created = create_resources(&model, &sdk, &clients).await?;
    let relays = start_relays(&model, &created, &clients, chaos, tasks);
    let functions = build_functions(&model, &fn_clients, chaos).await?;
    let (api, api_url) = start_api(&model, &functions, &names, api_port, tasks).await?;
    let (kinesis, sqs) =
        start_mappings(&model, &functions, &created, &clients, &names, tasks).await?;
    Ok(StackRegion {
        name: names.region,
        model,
        api,
        api_url,
        functions,
        kinesis,
        sqs,
        relays,
        queue_urls: created.queue_urls,
        clients,
        fn_clients,
    })
}

/// Creates `<run-dir>/logs`, cleans up after a stack killed earlier, and starts moto logging
/// to `logs/moto.log`.
async fn start_moto(run_dir: &Path) -> Result<testkit::Moto, StackError> {
    let logs = run_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
    reap_stale(run_dir);
    let moto_log = logs.join("moto.log");
    let moto = tokio::task::spawn_blocking(move || testkit::Moto::start(Some(&moto_log)))
        .await
        .map_err(|e| StackError::Wiring(format!("moto start task: {e}")))??;
    Ok(moto)
}

/// Every emulator call goes through the proxy that serializes Kinesis writes (moto loses
/// records under concurrent PutRecords; see [`crate::emulators::motoproxy`]). With chaos, the
/// functions reach it on a second listener that injects faults; the stack's own clients
/// (standing in for AWS's side, which retries for itself) keep the clean one. Returns (the
/// stack's endpoint, the functions' endpoint).
async fn start_proxies(
    moto: &testkit::Moto,
    chaos: Option<&Arc<Chaos>>,
    tasks: &mut Tasks,
) -> Result<(String, String), StackError> {
    let proxy = Proxy::new(moto.endpoint()).map_err(io("building the emulator proxy"))?;
    let aws_endpoint = serve_proxy(&proxy, None, tasks).await?;
    let functions_endpoint = match chaos {
        Some(c) => serve_proxy(&proxy, Some(c.clone()), tasks).await?,
        None => aws_endpoint.clone(),
    };
    Ok((aws_endpoint, functions_endpoint))
}

/// Serves `proxy` on a new loopback listener (with `chaos`: the fault-injecting one) until
/// shutdown; returns its endpoint.
async fn serve_proxy(
    proxy: &Arc<Proxy>,
    chaos: Option<Arc<Chaos>>,
    tasks: &mut Tasks,
) -> Result<String, StackError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding the emulator proxy port"))?;
    let endpoint = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(io("emulator proxy address"))?
    );
    let (proxy, sd) = (proxy.clone(), tasks.shutdown.clone());
    tasks.handles.push(tokio::spawn(async move {
        if let Err(e) = motoproxy::serve_proxy(listener, proxy, chaos, sd.wait()).await {
            tracing::error!(error = %e, "emulator_proxy_failed");
        }
    }));
    Ok(endpoint)
}

/// The template's parameter overrides: the local defaults it declares, the rules file, the
/// chaos defaults, the region's own (`region`: a second region's `RedshiftRegion`), then the
/// user's `--param`s (last wins).
fn parameter_overrides(
    opts: &StackOptions,
    declared: &[String],
    region: &[(String, String)],
    chaos: bool,
) -> Result<Vec<(String, String)>, StackError> {
    let declares = |p: &str| declared.iter().any(|d| d == p);
    let mut overrides: Vec<(String, String)> = Vec::new();
    for (k, v) in LOCAL_PARAMETER_DEFAULTS {
        if declares(k) {
            overrides.push((k.to_owned(), v.to_owned()));
        }
    }
    if let Some(rules) = &opts.rules
        && declares("RulesFile")
    {
        let abs = absolute(rules)?;
        overrides.push(("RulesFile".to_owned(), abs.display().to_string()));
    }
    if chaos {
        for (k, v) in CHAOS_PARAMETER_DEFAULTS {
            if declares(k) {
                overrides.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    overrides.extend(region.iter().filter(|(k, _)| declares(k)).cloned());
    overrides.extend(opts.parameters.iter().cloned());
    Ok(overrides)
}

/// Reads the template into the model, with the local parameter values and the region's own.
fn load_model(
    opts: &StackOptions,
    names: &LocalNames,
    region: &[(String, String)],
    chaos: Option<&Chaos>,
) -> Result<Model, StackError> {
    let text = std::fs::read_to_string(&opts.template)
        .map_err(io(format!("reading {}", opts.template.display())))?;
    let declared = template::declared_parameters(&text)?;
    let overrides = parameter_overrides(opts, &declared, region, chaos.is_some())?;
    let mut model = Model::from_yaml(&text, &overrides, names)?;
    if let Some(c) = chaos {
        // Killed and failed invocations leave messages in flight: they must come back in
        // seconds, not after the template's 12 or 30 minutes.
        for q in &mut model.queues {
            q.visibility_timeout_s = q.visibility_timeout_s.min(c.config().visibility_s);
        }
    }
    for w in &model.warnings {
        tracing::warn!(warning = %w, "template_not_emulated");
    }
    Ok(model)
}

/// Starts PostgreSQL with an empty warehouse in `dir`, or — when the unprivileged user
/// PostgreSQL must run as (we are root) cannot reach `dir`, e.g. under `/root` — in a
/// directory under the system temp dir.
async fn start_postgres(dir: PathBuf) -> Result<Postgres, StackError> {
    tokio::task::spawn_blocking(move || {
        wipe(&dir)?;
        match Postgres::start(&dir) {
            Err(PostgresError::DirNotAccessible { .. }) => {
                let fallback = std::env::temp_dir().join(format!("caudal-local-pg-{}", std::process::id()));
                tracing::warn!(
                    wanted = %dir.display(),
                    using = %fallback.display(),
                    "postgres cannot use the run directory (not reachable by its user); using a temp dir"
                );
                let _ = std::fs::remove_dir_all(&dir);
                wipe(&fallback)?;
                Postgres::start(&fallback).map_err(StackError::from)
            }
            other => other.map_err(StackError::from),
        }
    })
    .await
    .map_err(|e| StackError::Wiring(format!("postgres start task: {e}")))?
}

/// A free loopback port for the Data API, and its URL.
async fn bind_data_api() -> Result<(tokio::net::TcpListener, String), StackError> {
    let data_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding the Data API port"))?;
    let data_api_url = format!(
        "http://{}",
        data_listener.local_addr().map_err(io("Data API address"))?
    );
    Ok((data_listener, data_api_url))
}

/// Serves the Data API on `pg` from `data_listener`, reading COPY sources through `s3`.
fn serve_data_api(
    data_listener: tokio::net::TcpListener,
    pg: &Postgres,
    s3: aws_sdk_s3::Client,
    opts: &StackOptions,
    chaos: Option<&Arc<Chaos>>,
    tasks: &mut Tasks,
) -> Result<(), StackError> {
    let pg_config: PgConfig = pg
        .connection_string()
        .parse()
        .map_err(|e| StackError::Wiring(format!("postgres connection string: {e}")))?;
    let sd = tasks.shutdown.clone();
    let dataapi_opts = DataApiOptions {
        isolation: opts.isolation,
        chaos: chaos.cloned(),
        ..DataApiOptions::default()
    };
    tasks.handles.push(tokio::spawn(async move {
        if let Err(e) = dataapi::serve(data_listener, pg_config, s3, dataapi_opts, sd.wait()).await
        {
            tracing::error!(error = %e, "dataapi_failed");
        }
    }));
    Ok(())
}

/// The stack's own clients: moto through the clean proxy, and the Data API at `data_api_url`.
fn stack_clients(sdk: &aws_config::SdkConfig, data_api_url: &str) -> StackClients {
    let stack_data_api = Clients {
        aws: sdk.clone(),
        redshift_data_url: data_api_url.to_owned(),
    };
    StackClients::new(sdk, &stack_data_api.redshift_data_sdk())
}

/// The model's streams, queues, buckets and delivery streams, in moto.
async fn create_resources(
    model: &Model,
    sdk: &aws_config::SdkConfig,
    clients: &StackClients,
) -> Result<Created, StackError> {
    let created = resources::create(
        model,
        &ResourceClients {
            kinesis: clients.kinesis.clone(),
            sqs: clients.sqs.clone(),
            s3: clients.s3.clone(),
            firehose: aws_sdk_firehose::Client::new(sdk),
        },
    )
    .await?;
    Ok(created)
}

/// One relay per bucket notification, completing S3's records on their way to the queue.
fn start_relays(
    model: &Model,
    created: &Created,
    clients: &StackClients,
    chaos: Option<&Arc<Chaos>>,
    tasks: &mut Tasks,
) -> Vec<Arc<Relay>> {
    let versioned: Vec<String> = model
        .buckets
        .iter()
        .filter(|b| b.versioned)
        .map(|b| b.name.clone())
        .collect();
    let mut relays = Vec::new();
    for (relay_url, target_url) in &created.relays {
        let mut r = Relay::new(
            clients.sqs.clone(),
            clients.s3.clone(),
            relay_url.clone(),
            target_url.clone(),
            versioned.clone(),
        );
        if let Some(c) = chaos {
            r = r.with_chaos(c.clone());
        }
        let r = Arc::new(r);
        tasks.handles.push(r.start(tasks.shutdown.clone()));
        relays.push(r);
    }
    relays
}

/// The template's functions, in process (the loader migrates the warehouse on the way).
async fn build_functions(
    model: &Model,
    fn_clients: &Clients,
    chaos: Option<&Arc<Chaos>>,
) -> Result<Functions, StackError> {
    let mut fns: Functions = BTreeMap::new();
    for f in &model.functions {
        let Some(binary) = &f.binary else { continue };
        let handler = functions::build(binary, &f.environment, fn_clients).await?;
        let mut function = LocalFunction::new(f, handler);
        if let Some(c) = chaos {
            function = function.with_chaos(c.clone());
        }
        fns.insert(f.logical_id.clone(), Arc::new(function));
        tracing::info!(function = %f.name, binary = %binary, "function_ready");
    }
    Ok(fns)
}

/// Serves the template's routes on `api_port` (or a free port); returns the API and its URL.
async fn start_api(
    model: &Model,
    fns: &Functions,
    names: &LocalNames,
    api_port: Option<u16>,
    tasks: &mut Tasks,
) -> Result<(Arc<Api>, String), StackError> {
    let routes: Vec<BoundRoute> = model
        .routes
        .iter()
        .filter_map(|r| {
            fns.get(&r.function).map(|f| BoundRoute {
                route: r.clone(),
                function: f.clone(),
            })
        })
        .collect();
    let api = Arc::new(Api::new(routes, "local", &names.account_id).with_cors(model.cors.clone()));
    let api_listener = tokio::net::TcpListener::bind(("127.0.0.1", api_port.unwrap_or(0)))
        .await
        .map_err(io(format!(
            "binding the HTTP API port {}",
            api_port.unwrap_or(0)
        )))?;
    let api_url = format!(
        "http://{}",
        api_listener.local_addr().map_err(io("API address"))?
    );
    let (served, sd) = (api.clone(), tasks.shutdown.clone());
    tasks.handles.push(tokio::spawn(async move {
        if let Err(e) = http::serve(api_listener, served, sd.wait()).await {
            tracing::error!(error = %e, "http_api_failed");
        }
    }));
    Ok((api, api_url))
}

/// One event source poller per Kinesis/SQS event source of a function.
async fn start_mappings(
    model: &Model,
    fns: &Functions,
    created: &Created,
    clients: &StackClients,
    names: &LocalNames,
    tasks: &mut Tasks,
) -> Result<(Vec<Arc<KinesisMapping>>, Vec<Arc<SqsMapping>>), StackError> {
    let mut kinesis = Vec::new();
    let mut sqs = Vec::new();
    for f in &model.functions {
        let Some(func) = fns.get(&f.logical_id) else {
            continue;
        };
        let identity = f
            .role_arn
            .clone()
            .unwrap_or_else(|| format!("arn:aws:iam::{}:role/{}-role", names.account_id, f.name));
        for src in &f.kinesis {
            let on_failure_url = match src.on_failure.as_ref() {
                Some(of) if of.queue_name.is_some() => {
                    Some(created.queue_urls.get(&of.arn).cloned().ok_or_else(|| {
                        StackError::Wiring(format!(
                            "{}: OnFailure queue {} is not in the template",
                            f.logical_id, of.arn
                        ))
                    })?)
                }
                _ => None,
            };
            let m = Arc::new(KinesisMapping::new(
                clients.kinesis.clone(),
                clients.sqs.clone(),
                src.clone(),
                func.clone(),
                &names.region,
                &identity,
                on_failure_url,
            ));
            tasks.handles.extend(
                m.start(tasks.shutdown.clone())
                    .await
                    .map_err(|e| StackError::Wiring(e.to_string()))?,
            );
            kinesis.push(m);
        }
        for src in &f.sqs {
            let url = created
                .queue_urls
                .get(&src.queue_arn)
                .cloned()
                .ok_or_else(|| {
                    StackError::Wiring(format!(
                        "{}: queue {} is not in the template",
                        f.logical_id, src.queue_arn
                    ))
                })?;
            let m = Arc::new(SqsMapping::new(
                clients.sqs.clone(),
                src.clone(),
                url,
                func.clone(),
                &names.region,
            ));
            tasks.handles.extend(m.start(tasks.shutdown.clone()));
            sqs.push(m);
        }
    }
    Ok((kinesis, sqs))
}
