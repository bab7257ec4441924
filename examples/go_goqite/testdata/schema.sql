-- The plugin's schema, copied for the Go tests: pytest_quaero/core/queue.py SCHEMA (the goqite
-- table, goqite v0.4.0's schema_sqlite.sql made idempotent) followed by
-- pytest_quaero/core/store.py SCHEMA (crawl_jobs). The worker never creates tables: the plugin
-- does (prepare_database); TestSchemaMatchesThePlugin checks this copy against the Python source.

create table if not exists goqite (
  id text primary key default ('m_' || lower(hex(randomblob(16)))),
  created text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  updated text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  queue text not null,
  body blob not null,
  timeout text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  received integer not null default 0,
  priority integer not null default 0
) strict;

create trigger if not exists goqite_updated_timestamp after update on goqite begin
  update goqite set updated = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') where id = old.id;
end;

create index if not exists goqite_queue_priority_created_idx on goqite (queue, priority desc, created);

create table if not exists crawl_jobs (
  id text primary key,
  parent_id text not null default '',
  job_type text not null default 'parent',
  name text not null default '',
  url text not null default '',
  status text not null default 'pending',
  total_urls integer not null default 0,
  completed_urls integer not null default 0,
  failed_urls integer not null default 0,
  pending_urls integer not null default 0,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  started_at text,
  completed_at text,
  error text not null default ''
);
create index if not exists crawl_jobs_parent_idx on crawl_jobs (parent_id, created_at);
