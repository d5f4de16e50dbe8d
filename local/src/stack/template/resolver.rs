//! Resolving template values against the local names: parameters, pseudo parameters,
//! conditions, mappings and the intrinsic functions, each reference resolved to the **local**
//! physical name of its resource.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::tags::{intrinsic, yaml_to_json};
use super::{Result, TemplateError};

/// The local values of the pseudo parameters and the naming scheme for resources.
#[derive(Debug, Clone)]
pub struct LocalNames {
    /// `AWS::StackName`, also the prefix of generated physical names.
    pub stack_name: String,
    /// `AWS::AccountId` (moto's default account, so ARNs moto builds agree with ours).
    pub account_id: String,
    /// `AWS::Region`.
    pub region: String,
    /// Base of SQS queue URLs (`<base>/<account>/<name>`), i.e. the emulator's endpoint.
    pub sqs_base_url: String,
}

impl LocalNames {
    /// The names used by the local stack, with SQS URLs under `sqs_base_url`.
    pub fn local(sqs_base_url: &str) -> LocalNames {
        LocalNames {
            stack_name: "caudal-local".to_owned(),
            account_id: "123456789012".to_owned(),
            region: "us-east-1".to_owned(),
            sqs_base_url: sqs_base_url.trim_end_matches('/').to_owned(),
        }
    }

    /// The names of a second region's copy of the stack: its own stack name
    /// (`caudal-local-<region>`), so the physical names the template leaves to CloudFormation
    /// (which appends a random suffix) do not collide in S3's one bucket namespace.
    pub fn in_region(sqs_base_url: &str, region: &str) -> LocalNames {
        LocalNames {
            stack_name: format!("caudal-local-{region}"),
            region: region.to_owned(),
            ..LocalNames::local(sqs_base_url)
        }
    }

    pub(super) fn stack_id(&self) -> String {
        format!(
            "arn:aws:cloudformation:{}:{}:stack/{}/10ca1000-5eed-4000-8000-00000000ca0d",
            self.region, self.account_id, self.stack_name
        )
    }

    /// The physical name given to a resource the template does not name:
    /// `<stack>-<logical id in lower case>`.
    pub fn generated(&self, logical_id: &str) -> String {
        format!("{}-{}", self.stack_name, logical_id.to_ascii_lowercase())
    }
}

pub(super) struct Resource {
    pub(super) kind: String,
    pub(super) properties: Value,
    pub(super) metadata: Value,
    pub(super) condition: Option<String>,
}

/// Resolves values of one template against the local names.
pub struct Resolver {
    pub(super) names: LocalNames,
    pub(super) parameters: BTreeMap<String, Value>,
    pub(super) conditions: Map<String, Value>,
    pub(super) mappings: Map<String, Value>,
    pub(super) rules: Map<String, Value>,
    pub(super) resources: BTreeMap<String, Resource>,
    pub(super) globals_function: Value,
    pub(super) outputs: Map<String, Value>,
}

pub(super) const MAX_DEPTH: usize = 64;

impl Resolver {
    /// Parses `text` and fixes the parameter values (defaults + `overrides`).
    pub fn new(text: &str, overrides: &[(String, String)], names: &LocalNames) -> Result<Resolver> {
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| TemplateError::Syntax(e.to_string()))?;
        let doc = yaml_to_json(yaml, "template")?;
        let doc = doc
            .as_object()
            .ok_or_else(|| TemplateError::Syntax("the template is not a mapping".into()))?;
        let section = |name: &str| -> Map<String, Value> {
            doc.get(name)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };

        let parameters = parameter_values(&section("Parameters"), overrides)?;
        let resources = resources_of(section("Resources"))?;
        let globals_function = doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .cloned()
            .unwrap_or(Value::Null);
        Ok(Resolver {
            names: names.clone(),
            parameters,
            conditions: section("Conditions"),
            mappings: section("Mappings"),
            rules: section("Rules"),
            resources,
            globals_function,
            outputs: section("Outputs"),
        })
    }

    /// Evaluates the named condition.
    pub fn condition(&self, name: &str) -> Result<bool> {
        self.condition_at(name, 0)
    }

    pub(super) fn condition_at(&self, name: &str, depth: usize) -> Result<bool> {
        let at = format!("Conditions.{name}");
        if depth > MAX_DEPTH {
            return Err(TemplateError::invalid(
                &at,
                "conditions refer to each other in a cycle",
            ));
        }
        let expr = self
            .conditions
            .get(name)
            .ok_or_else(|| TemplateError::invalid(&at, "no such condition"))?;
        let v = self.eval(expr, &at, depth + 1)?;
        v.as_ref()
            .and_then(Value::as_bool)
            .ok_or_else(|| TemplateError::invalid(&at, "does not evaluate to a boolean"))
    }

    pub(super) fn resource_enabled(&self, r: &Resource) -> Result<bool> {
        match &r.condition {
            Some(c) => self.condition(c),
            None => Ok(true),
        }
    }

    /// Resolves every intrinsic in `v`. `Ok(None)` means `AWS::NoValue` (the property is absent).
    pub fn resolve(&self, v: &Value, at: &str) -> Result<Option<Value>> {
        self.eval(v, at, 0)
    }

    pub(super) fn eval(&self, v: &Value, at: &str, depth: usize) -> Result<Option<Value>> {
        if depth > MAX_DEPTH {
            return Err(TemplateError::invalid(
                at,
                "references nest too deeply (a cycle?)",
            ));
        }
        if let Some((name, arg)) = intrinsic(v) {
            return self.eval_intrinsic(name, arg, at, depth + 1);
        }
        Ok(Some(match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(x) = self.eval(item, &format!("{at}[{i}]"), depth + 1)? {
                        out.push(x);
                    }
                }
                Value::Array(out)
            }
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, item) in m {
                    if let Some(x) = self.eval(item, &format!("{at}.{k}"), depth + 1)? {
                        out.insert(k.clone(), x);
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }))
    }

    pub(super) fn eval_required(&self, v: &Value, at: &str, depth: usize) -> Result<Value> {
        self.eval(v, at, depth)?
            .ok_or_else(|| TemplateError::invalid(at, "AWS::NoValue is not allowed here"))
    }

    pub(super) fn eval_string(&self, v: &Value, at: &str, depth: usize) -> Result<String> {
        let x = self.eval_required(v, at, depth)?;
        scalar_string(&x)
            .ok_or_else(|| TemplateError::invalid(at, format!("expected a string, got {x}")))
    }

    pub(super) fn eval_list(&self, v: &Value, at: &str, depth: usize) -> Result<Vec<Value>> {
        match self.eval_required(v, at, depth)? {
            Value::Array(items) => Ok(items),
            other => Err(TemplateError::invalid(
                at,
                format!("expected a list, got {other}"),
            )),
        }
    }

    /// One intrinsic function; the condition functions and the data functions are evaluated
    /// by [`Resolver::eval_logic`] and [`Resolver::eval_data`].
    pub(super) fn eval_intrinsic(
        &self,
        name: &str,
        arg: &Value,
        at: &str,
        depth: usize,
    ) -> Result<Option<Value>> {
        let at_fn = format!("{at} ({name})");
        match name {
            "Ref" => {
                let target = self.eval_string(arg, &at_fn, depth)?;
                self.reference(&target, &at_fn, depth)
            }
            "Fn::GetAtt" => {
                let a = fixed_args(arg, 2, &at_fn)?;
                let res = self.eval_string(&a[0], &at_fn, depth)?;
                let attr = self.eval_string(&a[1], &at_fn, depth)?;
                self.get_att(&res, &attr, &at_fn, depth)
                    .map(|s| Some(Value::String(s)))
            }
            "Fn::Sub" => {
                let (text, vars) = self.sub_args(arg, &at_fn, depth)?;
                self.sub(&text, &vars, &at_fn, depth)
                    .map(|s| Some(Value::String(s)))
            }
            "Condition" | "Fn::If" | "Fn::Equals" | "Fn::Not" | "Fn::And" | "Fn::Or" => {
                self.eval_logic(name, arg, at, depth)
            }
            _ => self.eval_data(name, arg, at, depth),
        }
    }

    /// `Fn::Sub`'s text and variables: `text` or `[text, {variables}]`.
    fn sub_args(
        &self,
        arg: &Value,
        at_fn: &str,
        depth: usize,
    ) -> Result<(String, Map<String, Value>)> {
        Ok(match arg {
            Value::String(s) => (s.clone(), Map::new()),
            Value::Array(a) if a.len() == 2 => {
                let text = self.eval_string(&a[0], at_fn, depth)?;
                let vars = match self.eval_required(&a[1], at_fn, depth)? {
                    Value::Object(m) => m,
                    _ => {
                        return Err(TemplateError::invalid(at_fn, "variables must be a mapping"));
                    }
                };
                (text, vars)
            }
            _ => {
                return Err(TemplateError::invalid(
                    at_fn,
                    "expects a string or [string, mapping]",
                ));
            }
        })
    }

    /// The condition functions: `Condition`, `Fn::If`, `Fn::Equals`, `Fn::Not`, `Fn::And`,
    /// `Fn::Or`.
    fn eval_logic(&self, name: &str, arg: &Value, at: &str, depth: usize) -> Result<Option<Value>> {
        let at_fn = format!("{at} ({name})");
        let args = |n: usize| fixed_args(arg, n, &at_fn);
        match name {
            "Condition" => {
                let c = arg.as_str().unwrap_or_default();
                Ok(Some(Value::Bool(self.condition_at(c, depth)?)))
            }
            "Fn::If" => {
                let a = args(3)?;
                let cond = a[0].as_str().ok_or_else(|| {
                    TemplateError::invalid(&at_fn, "first argument must be a condition name")
                })?;
                let branch = if self.condition_at(cond, depth)? {
                    &a[1]
                } else {
                    &a[2]
                };
                self.eval(branch, at, depth)
            }
            "Fn::Equals" => {
                let a = args(2)?;
                let l = self.eval_required(&a[0], &at_fn, depth)?;
                let r = self.eval_required(&a[1], &at_fn, depth)?;
                let eq = match (scalar_string(&l), scalar_string(&r)) {
                    (Some(x), Some(y)) => x == y,
                    _ => l == r,
                };
                Ok(Some(Value::Bool(eq)))
            }
            "Fn::Not" => {
                let a = args(1)?;
                let b = self.eval_bool(&a[0], &at_fn, depth)?;
                Ok(Some(Value::Bool(!b)))
            }
            "Fn::And" | "Fn::Or" => {
                let a = arg.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                    TemplateError::invalid(&at_fn, "expects a list of conditions")
                })?;
                let mut acc = name == "Fn::And";
                for c in a {
                    let b = self.eval_bool(c, &at_fn, depth)?;
                    acc = if name == "Fn::And" {
                        acc && b
                    } else {
                        acc || b
                    };
                }
                Ok(Some(Value::Bool(acc)))
            }
            other => Err(unsupported_intrinsic(at, other)),
        }
    }

    /// The data functions: `Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::FindInMap`,
    /// `Fn::Base64`, `Fn::GetAZs`.
    fn eval_data(&self, name: &str, arg: &Value, at: &str, depth: usize) -> Result<Option<Value>> {
        let at_fn = format!("{at} ({name})");
        let args = |n: usize| fixed_args(arg, n, &at_fn);
        match name {
            "Fn::Join" => {
                let a = args(2)?;
                let sep = self.eval_string(&a[0], &at_fn, depth)?;
                let parts = self.eval_list(&a[1], &at_fn, depth)?;
                let parts: Vec<String> = parts
                    .iter()
                    .map(|p| {
                        scalar_string(p)
                            .ok_or_else(|| TemplateError::invalid(&at_fn, "parts must be strings"))
                    })
                    .collect::<Result<_>>()?;
                Ok(Some(Value::String(parts.join(&sep))))
            }
            "Fn::Select" => {
                let a = args(2)?;
                let idx = self.eval_string(&a[0], &at_fn, depth)?;
                let idx: usize = idx.parse().map_err(|_| {
                    TemplateError::invalid(&at_fn, format!("index {idx:?} is not a number"))
                })?;
                let list = self.eval_list(&a[1], &at_fn, depth)?;
                list.into_iter().nth(idx).map(Some).ok_or_else(|| {
                    TemplateError::invalid(&at_fn, format!("index {idx} out of range"))
                })
            }
            "Fn::Split" => {
                let a = args(2)?;
                let sep = self.eval_string(&a[0], &at_fn, depth)?;
                let s = self.eval_string(&a[1], &at_fn, depth)?;
                if sep.is_empty() {
                    return Err(TemplateError::invalid(&at_fn, "empty delimiter"));
                }
                Ok(Some(Value::Array(
                    s.split(sep.as_str())
                        .map(|p| Value::String(p.to_owned()))
                        .collect(),
                )))
            }
            "Fn::FindInMap" => {
                let a = args(3)?;
                let map = self.eval_string(&a[0], &at_fn, depth)?;
                let k1 = self.eval_string(&a[1], &at_fn, depth)?;
                let k2 = self.eval_string(&a[2], &at_fn, depth)?;
                let v = self
                    .mappings
                    .get(&map)
                    .and_then(|m| m.get(&k1))
                    .and_then(|m| m.get(&k2))
                    .ok_or_else(|| {
                        TemplateError::invalid(&at_fn, format!("no {map}.{k1}.{k2} in Mappings"))
                    })?;
                self.eval(v, &at_fn, depth)
            }
            "Fn::Base64" => {
                use base64::Engine as _;
                let s = self.eval_string(arg, &at_fn, depth)?;
                Ok(Some(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(s),
                )))
            }
            "Fn::GetAZs" => Ok(Some(Value::Array(
                ["a", "b", "c"]
                    .iter()
                    .map(|z| Value::String(format!("{}{z}", self.names.region)))
                    .collect(),
            ))),
            other => Err(unsupported_intrinsic(at, other)),
        }
    }

    pub(super) fn eval_bool(&self, v: &Value, at: &str, depth: usize) -> Result<bool> {
        match self.eval_required(v, at, depth)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
            other => Err(TemplateError::invalid(
                at,
                format!("expected a condition, got {other}"),
            )),
        }
    }

    pub(super) fn sub(
        &self,
        text: &str,
        vars: &Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| TemplateError::invalid(at, "unterminated ${ in Fn::Sub"))?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                // `${!Literal}` writes `${Literal}`.
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = vars.get(name) {
                out.push_str(&scalar_string(v).ok_or_else(|| {
                    TemplateError::invalid(at, format!("variable {name} is not a string"))
                })?);
            } else if let Some((res, attr)) = name
                .split_once('.')
                .filter(|(r, _)| self.resources.contains_key(*r))
            {
                out.push_str(&self.get_att(res, attr, at, depth)?);
            } else {
                let v = self.reference(name, at, depth)?.ok_or_else(|| {
                    TemplateError::invalid(at, format!("${{{name}}} is AWS::NoValue"))
                })?;
                out.push_str(&scalar_string(&v).ok_or_else(|| {
                    TemplateError::invalid(at, format!("${{{name}}} is not a string"))
                })?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `Ref` of a parameter, pseudo parameter or resource.
    pub(super) fn reference(&self, target: &str, at: &str, depth: usize) -> Result<Option<Value>> {
        let n = &self.names;
        let pseudo = match target {
            "AWS::NoValue" => return Ok(None),
            "AWS::AccountId" => Some(n.account_id.clone()),
            "AWS::Region" => Some(n.region.clone()),
            "AWS::StackName" => Some(n.stack_name.clone()),
            "AWS::StackId" => Some(n.stack_id()),
            "AWS::Partition" => Some("aws".to_owned()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
            "AWS::NotificationARNs" => return Ok(Some(Value::Array(vec![]))),
            _ => None,
        };
        if let Some(p) = pseudo {
            return Ok(Some(Value::String(p)));
        }
        if let Some(p) = self.parameters.get(target) {
            return Ok(Some(p.clone()));
        }
        if self.resources.contains_key(target) {
            return self
                .resource_ref(target, at, depth)
                .map(|s| Some(Value::String(s)));
        }
        Err(TemplateError::invalid(
            at,
            format!("Ref to unknown parameter or resource {target}"),
        ))
    }

    pub(super) fn resource(&self, id: &str, at: &str) -> Result<&Resource> {
        self.resources
            .get(id)
            .ok_or_else(|| TemplateError::invalid(at, format!("no resource {id}")))
    }

    /// The logical IDs of every resource the template declares (whatever its `Condition`).
    pub fn resource_ids(&self) -> impl Iterator<Item = &str> {
        self.resources.keys().map(String::as_str)
    }

    /// The `Type` of resource `id`, if the template declares it.
    pub fn resource_type(&self, id: &str) -> Option<&str> {
        self.resources.get(id).map(|r| r.kind.as_str())
    }

    /// The `Metadata` of resource `id` as written (short tags in long form), `Null` if none.
    pub fn metadata(&self, id: &str) -> Option<&Value> {
        self.resources.get(id).map(|r| &r.metadata)
    }

    /// SAM's `Globals.Function`, resolved (`None` if the template has none).
    pub fn function_globals(&self) -> Result<Option<Value>> {
        if self.globals_function.is_null() {
            return Ok(None);
        }
        self.eval(&self.globals_function, "Globals.Function", 0)
    }

    /// What `!Ref id` resolves to locally.
    pub fn resolve_ref(&self, id: &str) -> Result<String> {
        self.resource_ref(id, &format!("Ref {id}"), 0)
    }

    /// What `!GetAtt id.attr` resolves to locally.
    pub fn resolve_get_att(&self, id: &str, attr: &str) -> Result<String> {
        self.get_att(id, attr, &format!("Fn::GetAtt {id}.{attr}"), 0)
    }

    /// The physical name of a resource: its name property when the template sets one, else
    /// `<stack>-<logical id>`.
    pub fn physical_name(&self, id: &str) -> Result<String> {
        self.physical_name_at(id, &format!("Resources.{id}"), 0)
    }

    pub(super) fn physical_name_at(&self, id: &str, at: &str, depth: usize) -> Result<String> {
        let r = self.resource(id, at)?;
        let prop = match r.kind.as_str() {
            "AWS::S3::Bucket" => "BucketName",
            "AWS::SQS::Queue" => "QueueName",
            "AWS::Kinesis::Stream" => "Name",
            "AWS::KinesisFirehose::DeliveryStream" => "DeliveryStreamName",
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => "FunctionName",
            "AWS::IAM::Role" => "RoleName",
            "AWS::Logs::LogGroup" => "LogGroupName",
            "AWS::SNS::Topic" => "TopicName",
            _ => "",
        };
        if let Some(v) = r.properties.get(prop).filter(|_| !prop.is_empty()) {
            let at = format!("Resources.{id}.Properties.{prop}");
            if let Some(v) = self.eval(v, &at, depth + 1)? {
                return scalar_string(&v)
                    .ok_or_else(|| TemplateError::invalid(&at, "must be a string"));
            }
        }
        let mut name = self.names.generated(id);
        if r.kind == "AWS::SQS::Queue"
            && r.properties.get("FifoQueue").and_then(Value::as_bool) == Some(true)
        {
            name.push_str(".fifo");
        }
        Ok(name)
    }

    pub(super) fn resource_ref(&self, id: &str, at: &str, depth: usize) -> Result<String> {
        let r = self.resource(id, at)?;
        let name = self.physical_name_at(id, at, depth)?;
        let n = &self.names;
        Ok(match r.kind.as_str() {
            "AWS::SQS::Queue" => format!("{}/{}/{}", n.sqs_base_url, n.account_id, name),
            "AWS::SNS::Topic" => format!("arn:aws:sns:{}:{}:{}", n.region, n.account_id, name),
            // API and integration ids are opaque; the logical ID keeps them readable and lets
            // a route's `integrations/<id>` target be mapped back to its resource.
            "AWS::ApiGatewayV2::Api"
            | "AWS::ApiGatewayV2::Integration"
            | "AWS::ApiGatewayV2::Authorizer"
            | "AWS::Serverless::HttpApi" => id.to_owned(),
            _ => name,
        })
    }

    pub(super) fn get_att(&self, id: &str, attr: &str, at: &str, depth: usize) -> Result<String> {
        let r = self.resource(id, at)?;
        let name = self.physical_name_at(id, at, depth)?;
        let n = &self.names;
        let (region, account) = (&n.region, &n.account_id);
        let unsupported = || {
            TemplateError::invalid(
                at,
                format!(
                    "Fn::GetAtt {id}.{attr}: attribute not supported locally for {}",
                    r.kind
                ),
            )
        };
        Ok(match (r.kind.as_str(), attr) {
            ("AWS::S3::Bucket", "Arn") => format!("arn:aws:s3:::{name}"),
            ("AWS::S3::Bucket", "DomainName") => format!("{name}.s3.amazonaws.com"),
            ("AWS::S3::Bucket", "RegionalDomainName") => {
                format!("{name}.s3.{region}.amazonaws.com")
            }
            ("AWS::SQS::Queue", "Arn") => format!("arn:aws:sqs:{region}:{account}:{name}"),
            ("AWS::SQS::Queue", "QueueName") => name,
            ("AWS::SQS::Queue", "QueueUrl") => self.resource_ref(id, at, depth)?,
            ("AWS::Kinesis::Stream", "Arn") => {
                format!("arn:aws:kinesis:{region}:{account}:stream/{name}")
            }
            ("AWS::KinesisFirehose::DeliveryStream", "Arn") => {
                format!("arn:aws:firehose:{region}:{account}:deliverystream/{name}")
            }
            ("AWS::Serverless::Function" | "AWS::Lambda::Function", "Arn") => {
                format!("arn:aws:lambda:{region}:{account}:function:{name}")
            }
            ("AWS::IAM::Role", "Arn") => format!("arn:aws:iam::{account}:role/{name}"),
            ("AWS::IAM::Role", "RoleId") => format!("AROA{}", name.to_ascii_uppercase()),
            ("AWS::Logs::LogGroup", "Arn") => {
                format!("arn:aws:logs:{region}:{account}:log-group:{name}:*")
            }
            ("AWS::KMS::Key", "Arn") => format!("arn:aws:kms:{region}:{account}:key/{name}"),
            ("AWS::KMS::Key", "KeyId") => name,
            ("AWS::SNS::Topic", "TopicArn") => format!("arn:aws:sns:{region}:{account}:{name}"),
            ("AWS::SNS::Topic", "TopicName") => name,
            ("AWS::ApiGatewayV2::Api" | "AWS::Serverless::HttpApi", "ApiEndpoint") => {
                "http://127.0.0.1".to_owned()
            }
            (_, "Arn") => {
                // Unknown resource types still get a stable, well-formed ARN so templates that
                // grow new resources keep resolving.
                let service = r
                    .kind
                    .split("::")
                    .nth(1)
                    .unwrap_or("unknown")
                    .to_ascii_lowercase();
                format!("arn:aws:{service}:{region}:{account}:{name}")
            }
            _ => return Err(unsupported()),
        })
    }

    /// The properties of a resource with SAM `Globals.Function` merged in (functions only),
    /// fully resolved.
    pub fn properties(&self, id: &str) -> Result<Map<String, Value>> {
        let r = self.resource(id, &format!("Resources.{id}"))?;
        let raw = if r.kind == "AWS::Serverless::Function" && !self.globals_function.is_null() {
            merge_globals(&self.globals_function, &r.properties)
        } else {
            r.properties.clone()
        };
        match self.eval(&raw, &format!("Resources.{id}.Properties"), 0)? {
            Some(Value::Object(m)) => Ok(m),
            Some(_) => Err(TemplateError::invalid(
                &format!("Resources.{id}"),
                "Properties is not a mapping",
            )),
            None => Ok(Map::new()),
        }
    }
}

/// An intrinsic's argument list, which must have `n` entries.
fn fixed_args<'a>(arg: &'a Value, n: usize, at_fn: &str) -> Result<&'a Vec<Value>> {
    match arg.as_array() {
        Some(a) if a.len() == n => Ok(a),
        _ => Err(TemplateError::invalid(
            at_fn,
            format!("expects a list of {n} arguments"),
        )),
    }
}

fn unsupported_intrinsic(at: &str, name: &str) -> TemplateError {
    TemplateError::UnsupportedIntrinsic {
        at: at.to_owned(),
        name: name.to_owned(),
    }
}

/// Each declared parameter's value (override, else `Default`), checked against its
/// `AllowedValues`; list types become arrays.
fn parameter_values(
    declared: &Map<String, Value>,
    overrides: &[(String, String)],
) -> Result<BTreeMap<String, Value>> {
    for (k, _) in overrides {
        if !declared.contains_key(k) {
            return Err(TemplateError::UnknownParameter(k.clone()));
        }
    }
    let mut parameters = BTreeMap::new();
    for (name, decl) in declared {
        let ty = decl.get("Type").and_then(Value::as_str).unwrap_or("String");
        let value = match overrides.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => v.clone(),
            None => match decl.get("Default") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(scalar_string)
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.join(","))
                    .ok_or_else(|| {
                        TemplateError::invalid(
                            &format!("Parameters.{name}.Default"),
                            "list of non-scalars",
                        )
                    })?,
                _ => return Err(TemplateError::MissingParameter(name.clone())),
            },
        };
        if let Some(Value::Array(allowed)) = decl.get("AllowedValues") {
            let allowed: Vec<String> = allowed.iter().filter_map(scalar_string).collect();
            if !allowed.contains(&value) {
                return Err(TemplateError::NotAllowed {
                    name: name.clone(),
                    value,
                    allowed,
                });
            }
        }
        let resolved = if ty == "CommaDelimitedList" || ty.starts_with("List<") {
            if value.is_empty() {
                Value::Array(vec![Value::String(String::new())])
            } else {
                Value::Array(
                    value
                        .split(',')
                        .map(|s| Value::String(s.trim().to_owned()))
                        .collect(),
                )
            }
        } else {
            Value::String(value)
        };
        parameters.insert(name.clone(), resolved);
    }
    Ok(parameters)
}

/// The `Resources` section as [`Resource`]s (properties still unresolved).
fn resources_of(section: Map<String, Value>) -> Result<BTreeMap<String, Resource>> {
    let mut resources = BTreeMap::new();
    for (id, r) in section {
        let kind = r
            .get("Type")
            .and_then(Value::as_str)
            .ok_or_else(|| TemplateError::invalid(&format!("Resources.{id}"), "no Type"))?
            .to_owned();
        let condition = r
            .get("Condition")
            .and_then(Value::as_str)
            .map(str::to_owned);
        resources.insert(
            id,
            Resource {
                kind,
                properties: r
                    .get("Properties")
                    .cloned()
                    .unwrap_or(Value::Object(Map::new())),
                metadata: r.get("Metadata").cloned().unwrap_or(Value::Null),
                condition,
            },
        );
    }
    Ok(resources)
}

/// SAM Globals merge: mappings merge key by key (the function wins), lists are concatenated,
/// scalars are overridden.
fn merge_globals(global: &Value, local: &Value) -> Value {
    match (global, local) {
        (Value::Object(g), Value::Object(l)) => {
            let mut out = g.clone();
            for (k, v) in l {
                let merged = match out.get(k) {
                    Some(gv) if intrinsic(gv).is_none() && intrinsic(v).is_none() => {
                        merge_globals(gv, v)
                    }
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(g), Value::Array(l)) => Value::Array(g.iter().chain(l).cloned().collect()),
        (_, l) => l.clone(),
    }
}

/// A scalar as the string CloudFormation would use.
pub(super) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
