//! The requests this proxy refused last, with the policy that refused
//! them, as `/config_dump` shows them; each is also written to the
//! access log when it is on.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::explain::Denial;

use crate::access_log::{AccessLog, Record};
use crate::http::stream_info::StreamInfo;

/// Refusals kept, at most (the oldest goes first).
pub const KEPT: usize = 32;

/// The latest refusals.
#[derive(Default)]
pub(crate) struct Denials(Mutex<VecDeque<Denial>>);

impl Denials {
    /// Notes a refused request (`info.refused` set) answered `status`,
    /// from `principal`, and logs it to `log`.
    pub fn note(
        &self,
        info: StreamInfo,
        status: u16,
        principal: &str,
        took: Duration,
        log: Option<(&AccessLog, crate::metrics::Sizes, &str)>,
    ) {
        let Some(why) = &info.refused else { return };
        let denial = Denial {
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            method: why.request.method.clone(),
            path: why.request.path.clone(),
            source_principal: principal.to_string(),
            response_code: status,
            response_flags: info.flags(),
            response_code_details: why.details.clone(),
        };
        {
            let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(denial);
        }
        if let Some((log, sizes, me)) = log {
            let (request, service) = (why.request.clone(), why.cluster.as_str().into());
            let known = |p: &str| (p != api::peer::UNKNOWN).then(|| p.to_string());
            log.log(Record {
                request,
                status,
                info,
                service,
                took,
                sizes,
                principals: [known(principal), Some(me.to_string())],
            });
        }
    }

    /// The kept refusals, oldest first.
    pub fn latest(&self) -> Vec<Denial> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::stream_info::Refused;

    fn refused(path: &str) -> StreamInfo {
        let req = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .body(())
            .unwrap();
        StreamInfo {
            flags: vec!["RBAC"],
            refused: Some(Box::new(Refused {
                request: crate::access_log::Request::of(&req),
                details: api::explain::rbac_details("pay/deny", Some(1)),
                cluster: "inbound|8080||".into(),
            })),
            ..StreamInfo::default()
        }
    }

    #[test]
    fn the_latest_refusals_are_kept_with_their_policy() {
        let d = Denials::default();
        d.note(StreamInfo::default(), 200, "x", Duration::ZERO, None);
        assert!(d.latest().is_empty(), "a request not refused is not kept");
        for i in 0..KEPT + 3 {
            d.note(
                refused(&format!("/p/{i}")),
                403,
                "cluster.local/ns/a/sa/b",
                Duration::ZERO,
                None,
            );
        }
        let kept = d.latest();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].path, "/p/3");
        let last = kept.last().unwrap();
        assert_eq!(
            (
                last.method.as_str(),
                last.response_code,
                last.response_flags.as_str()
            ),
            ("POST", 403, "RBAC")
        );
        assert_eq!(
            last.response_code_details,
            "rbac_access_denied_matched_policy[ns[pay]-policy[deny]-rule[1]]"
        );
    }
}
