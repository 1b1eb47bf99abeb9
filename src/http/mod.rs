//! Everything that answers HTTP: the [`listener`] (connections, their limits and every
//! response's security headers), the [`routes`] (feeds, the status page, `/healthz`,
//! `/readyz`, `/metrics`, `/opml`, `/api/*`) and the [`status_page`]'s HTML. Read-only: nothing
//! here fetches a source, writes the store or renders a whole feed per request.

pub mod listener;
pub mod routes;
pub mod status_page;
