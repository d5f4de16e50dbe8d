//! What AWS publishes about the stack by itself, read from CloudWatch: the records the stream
//! accepted (`AWS/Kinesis IncomingRecords`, the events the API made durable) and how far behind
//! the raw-writer reads it (`AWS/Lambda IteratorAge`). The local stack publishes the same
//! metrics into its CloudWatch emulator (`caudal_local::emulators::metrics`).

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use time::OffsetDateTime;

/// CloudWatch refused or failed.
#[derive(Debug, thiserror::Error)]
#[error("CloudWatch {metric}: {reason}")]
pub struct MetricsError {
    /// The metric.
    pub metric: String,
    /// Why.
    pub reason: String,
}

/// One metric of one resource.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Namespace (`AWS/Kinesis`).
    pub namespace: &'a str,
    /// Metric name.
    pub name: &'a str,
    /// Dimension name (`StreamName`).
    pub dimension: &'a str,
    /// Dimension value.
    pub value: &'a str,
}

fn millis(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The data points of `s` from `from` to `to` with `stat`, one per `period_s`, as (start of
/// the period in Unix seconds, value) in time order: `None` when there are none.
async fn points(
    cw: &aws_sdk_cloudwatch::Client,
    s: Series<'_>,
    stat: Statistic,
    from: OffsetDateTime,
    to: OffsetDateTime,
    period_s: i32,
) -> Result<Option<Vec<(i64, f64)>>, MetricsError> {
    let out = cw
        .get_metric_statistics()
        .namespace(s.namespace)
        .metric_name(s.name)
        .dimensions(
            Dimension::builder()
                .name(s.dimension)
                .value(s.value)
                .build(),
        )
        .start_time(millis(from))
        .end_time(millis(to))
        .period(period_s)
        .statistics(stat.clone())
        .send()
        .await
        .map_err(|e| MetricsError {
            metric: format!("{}/{}", s.namespace, s.name),
            reason: caudal_aws::call_error(&e).to_string(),
        })?;
    let mut values: Vec<(i64, f64)> = out
        .datapoints()
        .iter()
        .filter_map(|d| {
            let v = match stat {
                Statistic::Sum => d.sum(),
                Statistic::Maximum => d.maximum(),
                _ => d.average(),
            }?;
            Some((d.timestamp().map_or(0, |t| t.secs()), v))
        })
        .collect();
    values.sort_by_key(|(t, _)| *t);
    Ok((!values.is_empty()).then_some(values))
}

/// One value per minute of `s` from `from` to now with `stat` (`Sum` or `Maximum`): (minute
/// in Unix seconds, value), minutes without data left out. At most a day (1,440 points, one
/// call).
pub async fn per_minute(
    cw: &aws_sdk_cloudwatch::Client,
    s: Series<'_>,
    stat: Statistic,
    from: OffsetDateTime,
) -> Result<Vec<(i64, f64)>, MetricsError> {
    let now = OffsetDateTime::now_utc();
    let from = from.max(now - time::Duration::DAY);
    Ok(points(cw, s, stat, from, now, 60)
        .await?
        .unwrap_or_default())
}

/// The sum of `s` over the time since `from` (`None`: no data).
pub async fn sum_since(
    cw: &aws_sdk_cloudwatch::Client,
    s: Series<'_>,
    from: OffsetDateTime,
) -> Result<Option<f64>, MetricsError> {
    let now = OffsetDateTime::now_utc();
    // At most 1,440 points per call: one-minute points up to a day.
    let period = if now - from > time::Duration::hours(24) {
        300
    } else {
        60
    };
    Ok(points(cw, s, Statistic::Sum, from, now, period)
        .await?
        .map(|v| v.iter().map(|(_, v)| v).sum()))
}

/// The largest value of `s` since `from` (`None`: no data).
pub async fn max_since(
    cw: &aws_sdk_cloudwatch::Client,
    s: Series<'_>,
    from: OffsetDateTime,
) -> Result<Option<f64>, MetricsError> {
    let now = OffsetDateTime::now_utc();
    Ok(points(cw, s, Statistic::Maximum, from, now, 60)
        .await?
        .map(|v| v.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatch::operation::get_metric_statistics::GetMetricStatisticsOutput;
    use aws_sdk_cloudwatch::types::Datapoint;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    const S: Series<'static> = Series {
        namespace: "AWS/Kinesis",
        name: "IncomingRecords",
        dimension: "StreamName",
        value: "caudal-events",
    };

    #[tokio::test]
    async fn sums_and_maxima_are_over_every_point_and_none_without_data() {
        let asked = mock!(aws_sdk_cloudwatch::Client::get_metric_statistics)
            .match_requests(|r| {
                r.namespace() == Some("AWS/Kinesis")
                    && r.metric_name() == Some("IncomingRecords")
                    && r.dimensions().first().and_then(|d| d.value()) == Some("caudal-events")
                    && r.period() == Some(60)
            })
            .then_output(|| {
                GetMetricStatisticsOutput::builder()
                    .datapoints(Datapoint::builder().sum(40.0).maximum(9.0).build())
                    .datapoints(Datapoint::builder().sum(2.0).maximum(30.0).build())
                    .build()
            });
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&asked]);
        let since = OffsetDateTime::now_utc() - time::Duration::HOUR;
        assert_eq!(sum_since(&cw, S, since).await.unwrap(), Some(42.0));
        assert_eq!(max_since(&cw, S, since).await.unwrap(), Some(30.0));

        let empty = mock!(aws_sdk_cloudwatch::Client::get_metric_statistics)
            .then_output(|| GetMetricStatisticsOutput::builder().build());
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&empty]);
        assert_eq!(sum_since(&cw, S, since).await.unwrap(), None);
        assert_eq!(max_since(&cw, S, since).await.unwrap(), None);
    }

    #[tokio::test]
    async fn minutes_come_in_time_order_with_their_start_and_at_most_a_day_back() {
        let now = OffsetDateTime::now_utc();
        let day_ago = now.unix_timestamp() - 86_400;
        let asked = mock!(aws_sdk_cloudwatch::Client::get_metric_statistics)
            .match_requests(move |r| {
                r.period() == Some(60)
                    && r.start_time()
                        .is_some_and(|t| (t.secs() - day_ago).abs() <= 5)
            })
            .then_output(|| {
                GetMetricStatisticsOutput::builder()
                    .datapoints(
                        Datapoint::builder()
                            .timestamp(DateTime::from_secs(1_800_000_120))
                            .sum(3.0)
                            .maximum(30.0)
                            .build(),
                    )
                    .datapoints(
                        Datapoint::builder()
                            .timestamp(DateTime::from_secs(1_800_000_060))
                            .sum(2.0)
                            .maximum(20.0)
                            .build(),
                    )
                    .datapoints(Datapoint::builder().maximum(1.0).build())
                    .build()
            });
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&asked]);
        let week = now - time::Duration::days(7);
        assert_eq!(
            per_minute(&cw, S, Statistic::Sum, week).await.unwrap(),
            vec![(1_800_000_060, 2.0), (1_800_000_120, 3.0)],
            "a point without the statistic is left out"
        );
        assert_eq!(
            per_minute(&cw, S, Statistic::Maximum, week).await.unwrap(),
            vec![(0, 1.0), (1_800_000_060, 20.0), (1_800_000_120, 30.0)]
        );
        let empty = mock!(aws_sdk_cloudwatch::Client::get_metric_statistics)
            .then_output(|| GetMetricStatisticsOutput::builder().build());
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&empty]);
        assert!(
            per_minute(&cw, S, Statistic::Sum, now)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_day_is_asked_in_five_minute_points() {
        let day = mock!(aws_sdk_cloudwatch::Client::get_metric_statistics)
            .match_requests(|r| r.period() == Some(300))
            .then_output(|| {
                GetMetricStatisticsOutput::builder()
                    .datapoints(Datapoint::builder().sum(7.0).build())
                    .build()
            });
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&day]);
        let since = OffsetDateTime::now_utc() - time::Duration::hours(25);
        assert_eq!(sum_since(&cw, S, since).await.unwrap(), Some(7.0));
    }
}
