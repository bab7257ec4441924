
create or replace function update_timestamp()
returns trigger as $$
begin
   new.updated = now();
   return new;
end;
$$ language plpgsql;

create table goqite (
  id text primary key default ('m_' || replace(gen_random_uuid()::text, '-', '')),
  created timestamptz not null default now(),
  updated timestamptz not null default now(),
  queue text not null,
  body bytea not null,
  timeout timestamptz not null default now(),
  received integer not null default 0,
  priority integer not null default 0
);

create trigger goqite_updated_timestamp
before update on goqite
for each row execute procedure update_timestamp();

create index goqite_queue_priority_created_idx on goqite (queue, priority desc, created);

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
  created_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  error text not null default ''
);
create index if not exists crawl_jobs_parent_idx on crawl_jobs (parent_id, created_at);
