//! A PostgreSQL URL as errors and logs may show it: its password replaced by `***`.

/// `url` with the password of its user part (`postgres://user:PASSWORD@host`) and any
/// `password=` parameter replaced by `***`. Works on text that does not parse as a URL too, so
/// an error about a malformed URL cannot leak it either.
pub fn redact(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let rest = match url.find("://") {
        Some(i) => {
            out.push_str(&url[..i + 3]);
            &url[i + 3..]
        }
        None => url,
    };
    // The authority ends at the first `/`, `?` or `#` after the last `@` (a password may hold
    // `/` or `?` unencoded; the host may not hold `@`).
    let (authority, tail) = match rest.rfind('@') {
        Some(at) => {
            let end = rest[at..]
                .find(['/', '?', '#'])
                .map_or(rest.len(), |i| at + i);
            rest.split_at(end)
        }
        None => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            rest.split_at(end)
        }
    };
    match authority.rfind('@') {
        Some(at) => {
            let (user, host) = authority.split_at(at);
            match user.find(':') {
                Some(colon) => {
                    out.push_str(&user[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(user),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(tail);
    // `password=VALUE` in the query (or in a `key=value` connection string).
    let mut shown = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.to_ascii_lowercase().find("password=") {
        let start = i + "password=".len();
        shown.push_str(&rest[..start]);
        shown.push_str("***");
        let end = rest[start..]
            .find(['&', ' ', '#'])
            .map_or(rest.len(), |j| start + j);
        rest = &rest[end..];
    }
    shown.push_str(rest);
    shown
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn the_password_never_shows() {
        let cases = [
            (
                "postgres://blockyard:s3cret@127.0.0.1:5432/blockyard",
                "postgres://blockyard:***@127.0.0.1:5432/blockyard",
            ),
            (
                "postgresql://u:p@ss/w?rd@db.internal/app?sslmode=disable",
                "postgresql://u:***@db.internal/app?sslmode=disable",
            ),
            (
                "postgres://u@db/app?password=s3cret&application_name=x",
                "postgres://u@db/app?password=***&application_name=x",
            ),
            ("postgres://db/app", "postgres://db/app"),
            (
                "host=db user=u PASSWORD=s3cret dbname=app",
                "host=db user=u PASSWORD=*** dbname=app",
            ),
            (
                "postgres://u:pa ss@host:badport/db",
                "postgres://u:***@host:badport/db",
            ),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }
}
