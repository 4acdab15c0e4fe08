//! `telemetry.istio.io`: Telemetry (tracing, metrics, access logs).

use std::collections::BTreeMap;

use super::message;
use super::security::PolicyTargetReference;
use super::shared::WorkloadSelector;

message!(
    /// The spec of a Telemetry resource.
    TelemetrySpec {
        selector: WorkloadSelector,
        target_ref: PolicyTargetReference,
        target_refs: Vec<PolicyTargetReference>,
        tracing: Vec<Tracing>,
        metrics: Vec<Metrics>,
        access_logging: Vec<AccessLogging>,
    }
);

message!(
    /// A provider by name.
    ProviderRef { name: String }
);

message!(
    /// Which traffic a setting applies to.
    TracingSelector { mode: String }
);

message!(
    /// Tracing settings.
    Tracing {
        r#match: TracingSelector,
        providers: Vec<ProviderRef>,
        random_sampling_percentage: f64,
        disable_span_reporting: bool,
        custom_tags: BTreeMap<String, CustomTag>,
        use_request_id_for_trace_sampling: bool,
    }
);

message!(
    /// A tag added to spans.
    CustomTag { literal: Literal, environment: Environment, header: RequestHeader }
);

message!(
    /// A literal value.
    Literal { value: String }
);

message!(
    /// A value from the proxy's environment.
    Environment { name: String, default_value: String }
);

message!(
    /// A value from a request header.
    RequestHeader { name: String, default_value: String }
);

message!(
    /// Metrics settings.
    Metrics { providers: Vec<ProviderRef>, overrides: Vec<MetricsOverrides>, reporting_interval: String }
);

message!(
    /// Which metric, for which side.
    MetricSelector { metric: String, custom_metric: String, mode: String }
);

message!(
    /// Changes to metrics.
    MetricsOverrides { r#match: MetricSelector, disabled: bool, tag_overrides: BTreeMap<String, TagOverride> }
);

message!(
    /// Add, change or remove a metric label.
    TagOverride { operation: String, value: String }
);

message!(
    /// Access log settings.
    AccessLogging { r#match: TracingSelector, providers: Vec<ProviderRef>, disabled: bool, filter: Filter }
);

message!(
    /// Which requests to log.
    Filter { expression: String }
);
