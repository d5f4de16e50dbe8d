//! The template model's unit tests: the repository's own template, short tags, references,
//! event sources, conditions and parameters.

use std::path::Path;
use std::time::Duration;

use super::*;

fn names() -> LocalNames {
    LocalNames::local("http://127.0.0.1:5000")
}

fn model(yaml: &str) -> Model {
    Model::from_yaml(yaml, &[], &names()).unwrap()
}

fn overrides(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The repository's own template: every function resolves to a local implementation, every
/// environment variable to a plain string naming a local resource, and the wiring between
/// stages (routes, stream, notification, queue, redrive) is complete.
#[test]
fn the_repository_template_resolves_to_a_complete_local_model() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    // The template needs exactly one Redshift target; the local stack sets the workgroup.
    let m = Model::load(
        &path,
        &overrides(&[("RedshiftWorkgroup", "caudal-local")]),
        &names(),
    )
    .unwrap();
    assert!(m.functions.len() >= 3, "{:?}", m.functions);
    for f in &m.functions {
        assert!(f.binary.is_some(), "{} has no binary", f.logical_id);
        for (k, v) in &f.environment {
            assert!(
                !v.contains("Fn::") && !v.contains("${"),
                "{}.{k} = {v}",
                f.logical_id
            );
        }
    }
    let stream_names: Vec<&str> = m.streams.iter().map(|s| s.name.as_str()).collect();
    let bucket_names: Vec<&str> = m.buckets.iter().map(|b| b.name.as_str()).collect();
    // Every env var naming a stream/bucket in the template names one the model creates.
    let mut stream_refs = 0;
    for f in &m.functions {
        for v in f.environment.values() {
            if v.starts_with("caudal-local-") && v.contains("stream") {
                stream_refs += 1;
            }
        }
        for s in &f.kinesis {
            assert!(stream_names.contains(&s.stream_name.as_str()), "{s:?}");
            assert!(s.batch_size >= 1);
            if let Some(q) = s.on_failure.as_ref().and_then(|o| o.queue_name.as_deref()) {
                assert!(m.queues.iter().any(|x| x.name == q), "on-failure queue {q}");
            }
        }
        for s in &f.sqs {
            let q = m
                .queues
                .iter()
                .find(|q| q.name == s.queue_name)
                .expect("queue");
            if let Some(r) = &q.redrive {
                assert!(m.queue_by_arn(&r.dead_letter_arn).is_some(), "{r:?}");
            }
        }
    }
    assert!(stream_refs >= 1);
    assert!(!m.routes.is_empty(), "no HTTP routes");
    for r in &m.routes {
        assert!(m.function(&r.function).is_some(), "{r:?}");
    }
    let notified: Vec<&QueueNotification> = m
        .buckets
        .iter()
        .flat_map(|b| &b.queue_notifications)
        .collect();
    assert!(!notified.is_empty());
    for n in notified {
        assert!(m.queue_by_arn(&n.queue_arn).is_some(), "{n:?}");
    }
    assert!(
        bucket_names
            .iter()
            .all(|b| b.len() <= 63 && *b == b.to_ascii_lowercase()),
        "{bucket_names:?}"
    );
    // Dead-letter queues are created first.
    for (i, q) in m.queues.iter().enumerate() {
        if let Some(r) = &q.redrive {
            let dlq = m
                .queues
                .iter()
                .position(|x| x.arn == r.dead_letter_arn)
                .unwrap();
            assert!(dlq < i);
        }
    }
}

#[test]
fn the_repository_template_enforces_its_rules() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let err = Model::load(&path, &[], &names()).unwrap_err();
    assert!(matches!(err, TemplateError::RuleFailed { .. }), "{err}");
}

const SMALL: &str = r#"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Size: {Type: Number, Default: 25}
  Mode: {Type: String, Default: ON_DEMAND, AllowedValues: [ON_DEMAND, PROVISIONED]}
  Shards: {Type: Number, Default: 3}
  Empty: {Type: String, Default: ""}
  Audience: {Type: CommaDelimitedList, Default: "a,b"}
Conditions:
  IsProvisioned: !Equals [!Ref Mode, PROVISIONED]
  HasEmpty: !Not [!Equals [!Ref Empty, ""]]
  Both: !And [!Condition IsProvisioned, !Not [!Condition HasEmpty]]
Globals:
  Function:
    Timeout: 20
    Environment:
      Variables:
        RUST_LOG: info
        SHARED: from-globals
Resources:
  Stream:
    Type: AWS::Kinesis::Stream
    Properties:
      StreamModeDetails: {StreamMode: !Ref Mode}
      ShardCount: !If [IsProvisioned, !Ref Shards, !Ref AWS::NoValue]
  Named:
    Type: AWS::S3::Bucket
    Properties:
      BucketName: !Sub
        - data-${AWS::AccountId}-${Suffix}
        - Suffix: !Select [0, !Split ["-", !Select [2, !Split ["/", !Ref AWS::StackId]]]]
      VersioningConfiguration: {Status: Enabled}
      NotificationConfiguration:
        QueueConfigurations:
          - Event: s3:ObjectCreated:*
            Queue: !GetAtt Work.Arn
            Filter: {S3Key: {Rules: [{Name: prefix, Value: in/}, {Name: suffix, Value: .gz}]}}
        TopicConfigurations:
          - Event: s3:ObjectCreated:*
            Topic: arn:aws:sns:us-east-1:123456789012:x
  Dlq:
    Type: AWS::SQS::Queue
  Work:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 90
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt Dlq.Arn
        maxReceiveCount: 4
  Fifo:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true}
  OnlyWhenProvisioned:
    Type: AWS::SQS::Queue
    Condition: IsProvisioned
  Lake:
    Type: AWS::KinesisFirehose::DeliveryStream
    Properties:
      ExtendedS3DestinationConfiguration:
        BucketARN: !GetAtt Named.Arn
        Prefix: "lake/"
        CompressionFormat: GZIP
  Fn:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties: {Binary: my-bin}
    Properties:
      FunctionName: !Sub ${AWS::StackName}-fn
      Environment:
        Variables:
          STREAM: !Ref Stream
          BUCKET: !Ref Named
          QUEUE_URL: !Ref Work
          QUEUE_NAME: !GetAtt Work.QueueName
          SIZE: !Ref Size
          LITERAL: !Sub "${!NotAVar}-${AWS::Region}"
          JOINED: !Join [":", !Ref Audience]
          FLAG: !If [Both, "yes", "no"]
          GONE: !If [HasEmpty, "x", !Ref AWS::NoValue]
          SHARED: from-function
      Events:
        Records:
          Type: Kinesis
          Properties:
            Stream: !GetAtt Stream.Arn
            StartingPosition: TRIM_HORIZON
            BatchSize: !Ref Size
            MaximumBatchingWindowInSeconds: 2
            MaximumRetryAttempts: 3
            BisectBatchOnFunctionError: true
            FunctionResponseTypes: [ReportBatchItemFailures]
            DestinationConfig:
              OnFailure: {Type: SQS, Destination: !GetAtt Dlq.Arn}
        Jobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            ScalingConfig: {MaximumConcurrency: 3}
        Api:
          Type: HttpApi
          Properties: {Path: "/items/{id}", Method: get}
        Timer:
          Type: Schedule
          Properties: {Schedule: rate(1 minute)}
  Bare:
    Type: AWS::Lambda::Function
    Properties:
      Timeout: 7
  Mapping:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      EventSourceArn: !GetAtt Work.Arn
      FunctionName: !Ref Bare
      BatchSize: 5
"#;

#[test]
fn references_resolve_to_local_names() {
    let m = model(SMALL);
    let f = m.function("Fn").unwrap();
    assert_eq!(f.name, "caudal-local-fn");
    assert_eq!(
        f.arn,
        "arn:aws:lambda:us-east-1:123456789012:function:caudal-local-fn"
    );
    assert_eq!(f.binary.as_deref(), Some("my-bin"));
    let env = &f.environment;
    assert_eq!(env["STREAM"], "caudal-local-stream");
    assert_eq!(env["BUCKET"], "data-123456789012-10ca1000");
    assert_eq!(
        env["QUEUE_URL"],
        "http://127.0.0.1:5000/123456789012/caudal-local-work"
    );
    assert_eq!(env["QUEUE_NAME"], "caudal-local-work");
    assert_eq!(env["SIZE"], "25");
    assert_eq!(env["LITERAL"], "${NotAVar}-us-east-1");
    assert_eq!(env["JOINED"], "a:b");
    assert_eq!(env["FLAG"], "no");
    assert!(
        !env.contains_key("GONE"),
        "AWS::NoValue removes the variable"
    );
    // Globals merge: function wins, globals fill in.
    assert_eq!(env["SHARED"], "from-function");
    assert_eq!(env["RUST_LOG"], "info");
    assert_eq!(f.timeout, Duration::from_secs(20));
}

#[test]
fn event_sources_are_read_with_their_settings_and_defaults() {
    let m = model(SMALL);
    let f = m.function("Fn").unwrap();
    let k = &f.kinesis[0];
    assert_eq!(k.stream_name, "caudal-local-stream");
    assert_eq!(k.batch_size, 25);
    assert_eq!(k.batching_window, Duration::from_secs(2));
    assert_eq!(k.starting_position, StartingPosition::TrimHorizon);
    assert!(k.report_batch_item_failures && k.bisect_on_error);
    assert_eq!(k.max_retry_attempts, Some(3));
    assert_eq!(k.max_record_age, None);
    let of = k.on_failure.as_ref().unwrap();
    assert_eq!(of.queue_name.as_deref(), Some("caudal-local-dlq"));
    let s = &f.sqs[0];
    assert_eq!(
        (s.batch_size, s.batching_window),
        (10, Duration::ZERO),
        "SQS defaults"
    );
    assert!(!s.report_batch_item_failures);
    assert_eq!(s.maximum_concurrency, Some(3));
    // The EventSourceMapping resource attaches to the plain Lambda function.
    let bare = m.function("Bare").unwrap();
    assert_eq!(bare.sqs[0].batch_size, 5);
    assert_eq!(
        bare.timeout,
        Duration::from_secs(7),
        "Globals apply to SAM functions only"
    );
    assert_eq!(m.routes.len(), 1);
    assert_eq!(m.routes[0].route_key, "GET /items/{id}");
    assert!(
        m.warnings.iter().any(|w| w.contains("Schedule")),
        "{:?}",
        m.warnings
    );
    assert!(m.warnings.iter().any(|w| w.contains("TopicConfigurations")));
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("Bare") && w.contains("Binary"))
    );
}

#[test]
fn resources_follow_conditions_and_parameters() {
    let m = model(SMALL);
    assert_eq!(
        m.streams[0].shard_count, 2,
        "on-demand streams get 2 local shards"
    );
    assert!(
        !m.queues
            .iter()
            .any(|q| q.logical_id == "OnlyWhenProvisioned")
    );
    let fifo = m.queues.iter().find(|q| q.logical_id == "Fifo").unwrap();
    assert!(fifo.fifo && fifo.name.ends_with(".fifo"));
    let work = m.queues.iter().find(|q| q.logical_id == "Work").unwrap();
    assert_eq!(work.visibility_timeout_s, 90);
    assert_eq!(
        work.redrive,
        Some(Redrive {
            dead_letter_arn: "arn:aws:sqs:us-east-1:123456789012:caudal-local-dlq".into(),
            max_receive_count: 4
        })
    );
    let b = &m.buckets[0];
    assert!(b.versioned);
    assert_eq!(b.queue_notifications[0].prefix.as_deref(), Some("in/"));
    assert_eq!(b.queue_notifications[0].suffix.as_deref(), Some(".gz"));
    assert_eq!(m.delivery_streams[0].bucket, b.name);
    assert_eq!(m.delivery_streams[0].compression, "GZIP");

    let p = Model::from_yaml(
        SMALL,
        &overrides(&[("Mode", "PROVISIONED"), ("Shards", "5")]),
        &names(),
    )
    .unwrap();
    assert_eq!(p.streams[0].shard_count, 5);
    assert!(
        p.queues
            .iter()
            .any(|q| q.logical_id == "OnlyWhenProvisioned")
    );
    assert_eq!(p.function("Fn").unwrap().environment["FLAG"], "yes");
    assert_eq!(p.parameters["Mode"], "PROVISIONED");
}

#[test]
fn bad_overrides_are_refused_with_the_parameter_named() {
    let err = Model::from_yaml(SMALL, &overrides(&[("Mode", "FAST")]), &names()).unwrap_err();
    assert!(
        err.to_string().contains("Mode") && err.to_string().contains("FAST"),
        "{err}"
    );
    let err = Model::from_yaml(SMALL, &overrides(&[("Nope", "1")]), &names()).unwrap_err();
    assert!(matches!(err, TemplateError::UnknownParameter(p) if p == "Nope"));
    let err = Model::from_yaml(
        "Parameters: {X: {Type: String}}\nResources: {}",
        &[],
        &names(),
    )
    .unwrap_err();
    assert!(matches!(err, TemplateError::MissingParameter(p) if p == "X"));
}

#[test]
fn an_unsupported_intrinsic_is_named_where_it_is_needed_only() {
    let yaml = r#"
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: b}}
    Properties:
      Environment:
        Variables:
          X: !ImportValue other-stack-output
  Unused:
    Type: AWS::IAM::Role
    Properties:
      Description: !Cidr [10.0.0.0/16, 2, 8]
"#;
    let err = Model::from_yaml(yaml, &[], &names()).unwrap_err();
    match err {
        TemplateError::UnsupportedIntrinsic { at, name } => {
            assert_eq!(name, "Fn::ImportValue");
            assert!(at.contains("Fn.Properties.Environment.Variables.X"), "{at}");
        }
        other => panic!("unexpected {other}"),
    }
    // The role's Fn::Cidr is never needed locally, so it does not fail the template.
    let ok = yaml.replace("!ImportValue other-stack-output", "plain");
    assert_eq!(model(&ok).functions[0].environment["X"], "plain");
}

#[test]
fn api_gateway_v2_routes_map_to_their_integration_function() {
    let yaml = r#"
Resources:
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties: {ProtocolType: HTTP}
  Integ:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${Handler.Arn}/invocations
      PayloadFormatVersion: "2.0"
  Post:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: POST /v1/events, Target: !Sub "integrations/${Integ}"}
  Default:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: $default, Target: !Join ["/", [integrations, !Ref Integ]]}
  Handler:
    Type: AWS::Serverless::Function
    Metadata: {BuildProperties: {Binary: h}}
    Properties: {}
"#;
    let m = model(yaml);
    let mut keys: Vec<&str> = m.routes.iter().map(|r| r.route_key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["$default", "POST /v1/events"]);
    assert!(m.routes.iter().all(|r| r.function == "Handler"));
    let post = m.routes.iter().find(|r| r.path.is_some()).unwrap();
    assert_eq!(post.method.as_deref(), Some("POST"));
}

#[test]
fn condition_cycles_and_bad_shapes_are_errors_not_hangs() {
    let yaml = r#"
Conditions:
  A: !Condition B
  B: !Condition A
Resources:
  Q:
    Type: AWS::SQS::Queue
    Condition: A
"#;
    let err = Model::from_yaml(yaml, &[], &names()).unwrap_err();
    assert!(
        err.to_string().contains("cycle") || err.to_string().contains("deeply"),
        "{err}"
    );
    let err = Model::from_yaml(
        "Resources: {Q: {Type: AWS::SQS::Queue, Properties: {QueueName: !Select [3, [a]]}}}",
        &[],
        &names(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    assert!(Model::from_yaml("- not a mapping", &[], &names()).is_err());
}

/// The short tags and their long forms name the same resource (the template contract test in
/// `tests/tests/template.rs` compares resolved references, so it relies on this).
#[test]
fn short_tags_and_long_forms_resolve_alike() {
    let yaml = r#"
Resources:
  Thing: {Type: AWS::SQS::Queue}
  Queue: {Type: AWS::SQS::Queue}
  Q2: {Type: AWS::SQS::Queue}
  Holder:
    Type: AWS::CloudWatch::Dashboard
    Properties:
      a: !Ref Thing
      b: !GetAtt Queue.Arn
      c: {Fn::GetAtt: [Q2, Arn]}
      d: !Sub x
      e: {Ref: Thing}
"#;
    let r = Resolver::new(yaml, &[], &names()).unwrap();
    let p = r.properties("Holder").unwrap();
    let thing = r.resolve_ref("Thing").unwrap();
    assert_eq!(
        thing,
        "http://127.0.0.1:5000/123456789012/caudal-local-thing"
    );
    assert_eq!(p["a"], thing.as_str());
    assert_eq!(p["e"], thing.as_str());
    assert_eq!(p["b"], r.resolve_get_att("Queue", "Arn").unwrap().as_str());
    assert_eq!(p["c"], "arn:aws:sqs:us-east-1:123456789012:caudal-local-q2");
    assert_eq!(p["c"], r.resolve_get_att("Q2", "Arn").unwrap().as_str());
    assert_eq!(p["d"], "x");
    assert_eq!(
        r.resource_type("Holder"),
        Some("AWS::CloudWatch::Dashboard")
    );
    assert_eq!(r.resource_ids().count(), 4);
}
