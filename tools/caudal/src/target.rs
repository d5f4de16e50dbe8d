//! What `caudal` operates on: a stack's outputs, read from CloudFormation (a deployed stack) or
//! from the local stack's `stack.json` (`--local`), optionally overridden one by one
//! (`--output Key=Value`), and turned into [`Resources`] and clients. Everything after this
//! module is the same code for both.

use std::collections::BTreeMap;
use std::path::Path;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use caudal_core::rules::Ident;
use caudal_core::warehouse::{Connection, Target};

/// Why the stack could not be found or its outputs do not describe a caudal stack. Permanent:
/// the arguments, the stack or the local stack's state must change.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `stack.json` is missing or unreadable.
    #[error("reading {path}: {reason} (is the local stack running? `make local`)")]
    StackFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The local stack has no such region.
    #[error("the local stack has no region {0:?}")]
    NoRegion(String),
    /// CloudFormation refused or failed.
    #[error("describing stack {stack}: {reason}")]
    Describe {
        /// Stack name.
        stack: String,
        /// Why.
        reason: String,
    },
    /// An output the command needs is missing.
    #[error("the stack has no output {0} (deployed from an older template? pass --output {0}=…)")]
    Missing(&'static str),
    /// An output has a value caudal cannot use.
    #[error("output {name}: {reason}")]
    Invalid {
        /// Output.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// Neither `--local` nor `--stack` (nor outputs enough to work without).
    #[error("say which stack: --stack <name> (with --region), or --local for the local stack")]
    NoStack,
}

/// Endpoints of the local stack's emulators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoints {
    /// moto (S3, Kinesis, SQS, Firehose).
    pub aws: String,
    /// The Data API endpoint.
    pub data_api: String,
    /// Lambda's Invoke API for the functions.
    pub lambda: String,
}

/// A stack's outputs and where its services are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// The outputs (CloudFormation's, or the local stack's resolved ones).
    pub outputs: BTreeMap<String, String>,
    /// The region the stack runs in.
    pub region: String,
    /// `Some` for the local stack.
    pub local: Option<LocalEndpoints>,
}

/// The parts of the local stack's `stack.json` `caudal` reads (written by `caudal-local up`,
/// `caudal_local::stack::StackFile`).
#[derive(Debug, serde::Deserialize)]
struct StackFile {
    moto_endpoint: String,
    data_api_url: String,
    #[serde(default)]
    lambda_url: String,
    #[serde(default)]
    regions: Vec<RegionOutputs>,
}

#[derive(Debug, serde::Deserialize)]
struct RegionOutputs {
    region: String,
    #[serde(default)]
    outputs: BTreeMap<String, String>,
}

impl Stack {
    /// The local stack of run directory `run_dir`, its region `region` (default: the home
    /// region, the first).
    pub fn local(run_dir: &Path, region: Option<&str>) -> Result<Stack, TargetError> {
        let path = run_dir.join("stack.json");
        let err = |reason: String| TargetError::StackFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let file: StackFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let r = match region {
            Some(name) => file
                .regions
                .into_iter()
                .find(|r| r.region == name)
                .ok_or_else(|| TargetError::NoRegion(name.to_owned()))?,
            None => file
                .regions
                .into_iter()
                .next()
                .ok_or_else(|| err("it lists no region".into()))?,
        };
        Ok(Stack {
            outputs: r.outputs,
            region: r.region,
            local: Some(LocalEndpoints {
                aws: file.moto_endpoint,
                data_api: file.data_api_url,
                lambda: file.lambda_url,
            }),
        })
    }

    /// A deployed stack's outputs, from CloudFormation.
    pub async fn deployed(sdk: &SdkConfig, name: &str) -> Result<Stack, TargetError> {
        let cfn = aws_sdk_cloudformation::Client::new(sdk);
        let err = |reason: String| TargetError::Describe {
            stack: name.to_owned(),
            reason,
        };
        let out = cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .map_err(|e| err(caudal_aws::call_error(&e).to_string()))?;
        let stack = out
            .stacks()
            .first()
            .ok_or_else(|| err("no such stack".into()))?;
        let mut outputs: BTreeMap<String, String> = stack
            .outputs()
            .iter()
            .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
            .collect();
        let region = sdk
            .region()
            .map(|r| r.as_ref().to_owned())
            .unwrap_or_default();
        // Stacks deployed before the output existed run where they were described.
        outputs
            .entry("StackRegion".to_owned())
            .or_insert_with(|| region.clone());
        Ok(Stack {
            outputs,
            region,
            local: None,
        })
    }

    /// `self` with `overrides` (`Key=Value`) replacing or adding outputs.
    pub fn with_overrides(mut self, overrides: &[(String, String)]) -> Stack {
        for (k, v) in overrides {
            self.outputs.insert(k.clone(), v.clone());
        }
        self
    }

    /// The SDK configuration for the stack's services (the local stack's emulators, with
    /// their fixed credentials, or the standard credential chain in the stack's region).
    pub async fn sdk_config(&self) -> SdkConfig {
        let loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()));
        match &self.local {
            Some(l) => {
                loader
                    .endpoint_url(&l.aws)
                    .credentials_provider(aws_credential_types::Credentials::new(
                        "caudal-local",
                        "caudal-local",
                        None,
                        None,
                        "caudal-local",
                    ))
                    .load()
                    .await
            }
            None => loader.load().await,
        }
    }

    /// The clients: S3 path-style for the local stack, the Data API at its endpoint, or in the
    /// warehouse's region when that is another one.
    pub async fn clients(&self, resources: &Resources) -> Clients {
        let sdk = self.sdk_config().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(self.local.is_some())
                .build(),
        );
        let mut data = aws_sdk_redshiftdata::config::Builder::from(&sdk)
            .region(Region::new(resources.warehouse_region.clone()));
        if let Some(l) = &self.local {
            data = data.endpoint_url(&l.data_api);
        }
        let mut lambda = aws_sdk_lambda::config::Builder::from(&sdk);
        if let Some(l) = &self.local {
            lambda = lambda.endpoint_url(&l.lambda);
        }
        Clients {
            s3,
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
            lambda: aws_sdk_lambda::Client::from_conf(lambda.build()),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            kinesis: aws_sdk_kinesis::Client::new(&sdk),
            redshift: aws_sdk_redshiftdata::Client::from_conf(data.build()),
        }
    }
}

/// The AWS clients every command uses (the SDK's standard retries on: `caudal` runs outside
/// any Lambda deadline, unlike the functions' clients in `caudal_aws::clients`).
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// CloudWatch (what AWS publishes about the stack).
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// Lambda (invoking the raw-writer).
    pub lambda: aws_sdk_lambda::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// Kinesis.
    pub kinesis: aws_sdk_kinesis::Client,
    /// The Redshift Data API.
    pub redshift: aws_sdk_redshiftdata::Client,
}

/// The stack's resources, named by its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// `ApiUrl`, ending in `/`.
    pub api_url: String,
    /// The region the stack runs in.
    pub region: String,
    /// `AuthMode` (`NONE`, `IAM`, `JWT`…), when the stack reports it.
    pub auth_mode: Option<String>,
    /// `EventStreamName`.
    pub stream: String,
    /// `StreamRetentionHours`, when the stack reports it.
    pub retention_hours: Option<u32>,
    /// `RawBucketName`.
    pub raw_bucket: String,
    /// `RawKeyRegion`: the region this stack's raw keys name (`None` in the warehouse's home
    /// region, whose keys name none).
    pub raw_key_region: Option<String>,
    /// `LoaderQueueUrl`.
    pub loader_queue: String,
    /// `LoaderDeadLetterQueueUrl`.
    pub loader_dlq: String,
    /// `RawWriterFailureQueueUrl`.
    pub raw_failures: String,
    /// `RawWriterFunctionName`, when the stack reports it.
    pub raw_writer: Option<String>,
    /// Other dead-letter queues to watch: (what it is, URL).
    pub other_dlqs: Vec<(String, String)>,
    /// The warehouse (from `WarehouseConnection`).
    pub warehouse: Connection,
    /// Schema of the tables.
    pub schema: Ident,
    /// Region of the warehouse.
    pub warehouse_region: String,
}

fn get<'a>(o: &'a BTreeMap<String, String>, name: &'static str) -> Result<&'a str, TargetError> {
    o.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(TargetError::Missing(name))
}

/// The warehouse named by a `WarehouseConnection` output: `key=value` pairs joined by `;`
/// (`workgroup`, `cluster`, `database`, `schema`, `secret_arn`, `db_user`, `region`; empty
/// values are unset): (connection, schema, region).
pub fn parse_warehouse(text: &str) -> Result<(Connection, Ident, String), TargetError> {
    let bad = |reason: String| TargetError::Invalid {
        name: "WarehouseConnection",
        reason,
    };
    let mut parts: BTreeMap<&str, &str> = BTreeMap::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("{pair:?} is not key=value")))?;
        if !matches!(
            k,
            "workgroup" | "cluster" | "database" | "schema" | "secret_arn" | "db_user" | "region"
        ) {
            return Err(bad(format!("unknown key {k:?}")));
        }
        if !v.is_empty() {
            parts.insert(k, v);
        }
    }
    let target = match (parts.get("workgroup"), parts.get("cluster")) {
        (Some(w), None) => Target::Workgroup((*w).to_owned()),
        (None, Some(c)) => Target::Cluster((*c).to_owned()),
        _ => return Err(bad("needs exactly one of workgroup and cluster".into())),
    };
    let database = parts
        .get("database")
        .ok_or_else(|| bad("no database".into()))?;
    let schema = Ident::parse(parts.get("schema").copied().unwrap_or("public"))
        .map_err(|e| bad(format!("schema: {e}")))?;
    let region = parts
        .get("region")
        .copied()
        .filter(|r| caudal_core::config::is_region_name(r))
        .ok_or_else(|| bad("no valid region".into()))?;
    Ok((
        Connection {
            target,
            database: (*database).to_owned(),
            secret_arn: parts.get("secret_arn").map(|s| (*s).to_owned()),
            db_user: parts.get("db_user").map(|s| (*s).to_owned()),
        },
        schema,
        region.to_owned(),
    ))
}

impl Resources {
    /// Reads the outputs a caudal stack has.
    pub fn from_outputs(o: &BTreeMap<String, String>) -> Result<Resources, TargetError> {
        let (warehouse, schema, warehouse_region) =
            parse_warehouse(get(o, "WarehouseConnection")?)?;
        let retention_hours = match o.get("StreamRetentionHours") {
            Some(v) => Some(v.parse::<u32>().map_err(|_| TargetError::Invalid {
                name: "StreamRetentionHours",
                reason: format!("{v:?} is not a number of hours"),
            })?),
            None => None,
        };
        let other_dlqs = [
            ("LakeRetryDLQUrl", "lake retry dead-letter queue"),
            ("SpillDLQUrl", "spill dead-letter queue"),
        ]
        .iter()
        .filter_map(|(n, name)| o.get(*n).map(|u| ((*name).to_owned(), u.clone())))
        .collect();
        Ok(Resources {
            api_url: format!("{}/", get(o, "ApiUrl")?.trim_end_matches('/')),
            region: get(o, "StackRegion")?.to_owned(),
            auth_mode: o.get("AuthMode").cloned(),
            stream: get(o, "EventStreamName")?.to_owned(),
            retention_hours,
            raw_bucket: get(o, "RawBucketName")?.to_owned(),
            raw_key_region: o.get("RawKeyRegion").filter(|r| !r.is_empty()).cloned(),
            loader_queue: get(o, "LoaderQueueUrl")?.to_owned(),
            loader_dlq: get(o, "LoaderDeadLetterQueueUrl")?.to_owned(),
            raw_failures: get(o, "RawWriterFailureQueueUrl")?.to_owned(),
            raw_writer: o
                .get("RawWriterFunctionName")
                .filter(|f| !f.is_empty())
                .cloned(),
            other_dlqs,
            warehouse,
            schema,
            warehouse_region,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warehouse_output_names_one_target_and_its_region() {
        let (c, schema, region) = parse_warehouse(
            "workgroup=wg;cluster=;database=dev;schema=analytics;secret_arn=;db_user=;region=eu-west-1",
        )
        .unwrap();
        assert_eq!(c.target, Target::Workgroup("wg".into()));
        assert_eq!(c.database, "dev");
        assert_eq!((c.secret_arn, c.db_user), (None, None));
        assert_eq!(schema.as_str(), "analytics");
        assert_eq!(region, "eu-west-1");
        let (c, schema, _) = parse_warehouse(
            "workgroup=;cluster=c1;database=dev;schema=;secret_arn=arn:aws:secretsmanager:x;db_user=u;region=us-east-1",
        )
        .unwrap();
        assert_eq!(c.target, Target::Cluster("c1".into()));
        assert_eq!(c.secret_arn.as_deref(), Some("arn:aws:secretsmanager:x"));
        assert_eq!(c.db_user.as_deref(), Some("u"));
        assert_eq!(schema.as_str(), "public", "the template's default");
        for bad in [
            "workgroup=a;cluster=b;database=d;region=us-east-1",
            "database=d;region=us-east-1",
            "workgroup=a;region=us-east-1",
            "workgroup=a;database=d",
            "workgroup=a;database=d;region=us-east-1;colour=blue",
            "workgroup=a;database=d;region=us-east-1;schema=Bad-Name",
            "workgroup;database=d;region=us-east-1",
        ] {
            assert!(parse_warehouse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_local_stack_file_is_read_as_caudal_local_writes_it() {
        use caudal_local::stack::{RegionEndpoint, StackFile};
        let dir = std::env::temp_dir().join(format!("caudal-stackfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let region = |name: &str, queue: &str| RegionEndpoint {
            region: name.into(),
            api_url: "http://127.0.0.1:1".into(),
            outputs: [("LoaderQueueUrl".to_owned(), queue.to_owned())].into(),
        };
        let file = StackFile {
            pid: 1,
            moto_pid: 2,
            moto_endpoint: "http://127.0.0.1:5000".into(),
            api_url: "http://127.0.0.1:1".into(),
            data_api_url: "http://127.0.0.1:6000".into(),
            lambda_url: "http://127.0.0.1:7000".into(),
            pg_port: 5432,
            pg_data_dir: dir.join("pg"),
            psql: "psql".into(),
            regions: vec![region("us-east-1", "q-home"), region("us-west-2", "q-west")],
        };
        std::fs::write(
            dir.join("stack.json"),
            serde_json::to_string(&file).unwrap(),
        )
        .unwrap();
        let home = Stack::local(&dir, None).unwrap();
        assert_eq!(home.region, "us-east-1");
        assert_eq!(home.outputs["LoaderQueueUrl"], "q-home");
        let l = home.local.unwrap();
        assert_eq!(
            (l.aws.as_str(), l.data_api.as_str(), l.lambda.as_str()),
            (
                "http://127.0.0.1:5000",
                "http://127.0.0.1:6000",
                "http://127.0.0.1:7000"
            )
        );
        let west = Stack::local(&dir, Some("us-west-2")).unwrap();
        assert_eq!(west.outputs["LoaderQueueUrl"], "q-west");
        assert!(matches!(
            Stack::local(&dir, Some("eu-west-1")),
            Err(TargetError::NoRegion(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(
            Stack::local(&dir, None),
            Err(TargetError::StackFile { .. })
        ));
    }

    #[test]
    fn resources_name_what_is_missing() {
        let mut o: BTreeMap<String, String> = [
            ("ApiUrl", "https://x.execute-api.us-east-1.amazonaws.com"),
            ("EventStreamName", "s"),
            ("RawBucketName", "raw"),
            ("LoaderQueueUrl", "q"),
            ("LoaderDeadLetterQueueUrl", "dlq"),
            ("RawWriterFailureQueueUrl", "f"),
            ("StreamRetentionHours", "24"),
            ("StackRegion", "us-east-1"),
            (
                "WarehouseConnection",
                "workgroup=wg;database=dev;region=us-east-1",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let r = Resources::from_outputs(&o).unwrap();
        assert_eq!(r.api_url, "https://x.execute-api.us-east-1.amazonaws.com/");
        assert_eq!(r.retention_hours, Some(24));
        assert_eq!((r.raw_key_region, r.raw_writer), (None, None));
        o.insert("RawKeyRegion".into(), String::new());
        o.insert("RawWriterFunctionName".into(), String::new());
        let r = Resources::from_outputs(&o).unwrap();
        assert_eq!(
            (r.raw_key_region, r.raw_writer),
            (None, None),
            "empty is unset"
        );
        o.insert("RawKeyRegion".into(), "us-west-2".into());
        o.insert("RawWriterFunctionName".into(), "caudal-raw-writer".into());
        let r = Resources::from_outputs(&o).unwrap();
        assert_eq!(r.raw_key_region.as_deref(), Some("us-west-2"));
        assert_eq!(r.raw_writer.as_deref(), Some("caudal-raw-writer"));
        o.remove("LoaderDeadLetterQueueUrl");
        let e = Resources::from_outputs(&o).unwrap_err();
        assert!(e.to_string().contains("LoaderDeadLetterQueueUrl"), "{e}");
        o.insert("LoaderDeadLetterQueueUrl".into(), "dlq".into());
        o.insert("StreamRetentionHours".into(), "a day".into());
        assert!(Resources::from_outputs(&o).is_err());
    }
}
