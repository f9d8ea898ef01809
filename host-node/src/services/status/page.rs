//! The human page at `GET /`: network totals and a host table. Every value from a report is
//! HTML-escaped (a peer controls its `version` string).

use std::fmt::Write;

use super::NetworkStatus;

/// Hosts shown on the page at most.
pub const MAX_ROWS: usize = 1_000;

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// The page.
pub fn render(s: &NetworkStatus) -> String {
    let t = &s.totals;
    let mut h = String::with_capacity(4096 + s.hosts.len() * 400);
    h.push_str(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>BTFS network status</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right}\
         td:first-child{text-align:left;font-family:monospace}.off{color:#999}</style>\
         </head><body><h1>BTFS network status</h1>",
    );
    let _ = write!(
        h,
        "<p>{} hosts, {} online. Online capacity {}, used {}; {} shards held; \
         {} requests served, {} failed.</p>",
        t.hosts,
        t.online,
        gib(t.capacity_bytes),
        gib(t.used_bytes),
        t.shards_held,
        t.requests_served,
        t.requests_failed
    );
    h.push_str(
        "<table><tr><th>peer id</th><th>online</th><th>uptime (s)</th><th>capacity</th>\
         <th>used</th><th>shards</th><th>served</th><th>failed</th><th>version</th>\
         <th>reports</th></tr>",
    );
    for host in &s.hosts {
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if host.online { "" } else { " class=\"off\"" },
            escape(&host.peer_id),
            if host.online { "yes" } else { "no" },
            host.uptime_secs,
            gib(host.capacity_bytes),
            gib(host.used_bytes),
            host.shards_held,
            host.requests_served,
            host.requests_failed,
            escape(&host.version),
            host.reports
        );
    }
    h.push_str("</table>");
    if (s.hosts.len() as u64) < s.hosts_total {
        let _ = write!(
            h,
            "<p>Showing {} of {} hosts; the JSON API at /api/v1/status lists all.</p>",
            s.hosts.len(),
            s.hosts_total
        );
    }
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert(\"x\") & 'y'</script>"),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
