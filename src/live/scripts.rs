//! The Lua scripts that keep the live state in Redis consistent: each runs atomically on the
//! server, and each reads the server's clock (`TIME`), so nodes whose clocks differ agree on
//! when a lease runs out.
//!
//! Keys (the prefix is `voxwire:`):
//! - `lease:{call}`: the node holding live call `call`, expiring unless renewed;
//! - `live:org:{org}` and `live:sub:{org}:{sub}`: sorted sets of the live calls of an org and of
//!   one subject in it, each scored with the time its lease runs out, so that the calls of a
//!   node that died stop counting when their leases do;
//! - `info:{call}`: the live call as the monitor's snapshot shows it, expiring with the lease;
//! - `deltas`: set while a monitor somewhere wants response deltas.

/// Claims a call for a node. KEYS: lease, org set, subject set, info. ARGV: node, call id,
/// lease ms, org cap, subject cap, per-user cap (-1: none), info JSON. Returns `{status, detail}`: `ok`, `live`
/// (detail: the node holding it), `too_many`, `org` or `subject` (detail: the cap).
pub const CLAIM: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {'live', holder} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
local in_org = redis.call('ZCARD', KEYS[2])
local in_sub = redis.call('ZCARD', KEYS[3])
local user_cap = tonumber(ARGV[6])
if user_cap >= 0 and in_sub >= user_cap then return {'too_many', ARGV[6]} end
local org_cap = tonumber(ARGV[4])
if org_cap >= 0 and in_org >= org_cap then return {'org', ARGV[4]} end
local sub_cap = tonumber(ARGV[5])
if sub_cap >= 0 and in_sub >= sub_cap then return {'subject', ARGV[5]} end
local expires = now + tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], expires, ARGV[2])
redis.call('ZADD', KEYS[3], expires, ARGV[2])
redis.call('SET', KEYS[4], ARGV[7], 'PX', ARGV[3])
return {'ok', ''}
"#;

/// Renews a node's leases and snapshot rows. KEYS: per call, lease, org set, subject set and
/// info. ARGV: node, lease ms, whether this node has a monitor that wants deltas (`1`/`0`),
/// then per call its id and info JSON. A lease that ran out is taken again unless another node
/// holds it now. Returns whether any monitor wants deltas (`1`/`0`), then the ids of the calls
/// another node holds.
pub const RENEW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[2])
local expires = now + ms
local out = {'0'}
if ARGV[3] == '1' then redis.call('SET', 'voxwire:deltas', ARGV[1], 'PX', ms) end
if redis.call('EXISTS', 'voxwire:deltas') == 1 then out[1] = '1' end
for i = 0, (#KEYS / 4) - 1 do
  local k = i * 4
  local id = ARGV[4 + i * 2]
  local holder = redis.call('GET', KEYS[k + 1])
  if holder == false or holder == ARGV[1] then
    redis.call('SET', KEYS[k + 1], ARGV[1], 'PX', ms)
    redis.call('ZADD', KEYS[k + 2], expires, id)
    redis.call('ZADD', KEYS[k + 3], expires, id)
    redis.call('SET', KEYS[k + 4], ARGV[5 + i * 2], 'PX', ms)
  else
    table.insert(out, id)
  end
end
return out
"#;

/// Lets a call go. KEYS: lease, org set, subject set, info. ARGV: node, call id. Does nothing
/// when another node holds the call now.
pub const RELEASE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"#;

/// The live calls of an org, as snapshot rows. KEYS: the org set. Returns the info JSON of each
/// call whose lease has not run out.
pub const LIVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ids = redis.call('ZRANGE', KEYS[1], 0, 999)
local out = {}
for _, id in ipairs(ids) do
  local info = redis.call('GET', 'voxwire:info:' .. id)
  if info then table.insert(out, info) end
end
return out
"#;

/// Today's call time of an org, kept per day in one hash `used:{day}:{org}`: a field per call
/// stretch (`c:{call}:{start}`, its ms that day), per subject (`s:{sub}`) and `_total`. Values
/// are absolute, so writing one again counts nothing twice.
///
/// Raises one stretch's ms. KEYS: the hash. ARGV: stretch field, sub, ms, seconds to keep the
/// hash. Does nothing while the hash does not exist (it is seeded from the store first).
pub const USED_ADD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local v = tonumber(ARGV[3])
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if v > old then
  redis.call('HSET', KEYS[1], ARGV[1], v)
  redis.call('HINCRBY', KEYS[1], '_total', v - old)
  redis.call('HINCRBY', KEYS[1], 's:' .. ARGV[2], v - old)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"#;

/// Reads the org's and the subject's ms of the day without one stretch's own. KEYS: the hash.
/// ARGV: stretch field (or ''), sub. Returns `{org ms, sub ms}`, or `{-1, -1}` when the hash
/// does not exist.
pub const USED_READ: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, -1} end
local own = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local total = tonumber(redis.call('HGET', KEYS[1], '_total') or '0')
local sub = tonumber(redis.call('HGET', KEYS[1], 's:' .. ARGV[2]) or '0')
return {total - own, sub - own}
"#;

/// Seeds the hash from the store, unless it exists. KEYS: the hash. ARGV: seconds to keep it,
/// then per stretch its field, sub and ms.
pub const USED_SEED: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], '_total', 0)
for i = 2, #ARGV, 3 do
  local v = tonumber(ARGV[i + 2])
  redis.call('HSET', KEYS[1], ARGV[i], v)
  redis.call('HINCRBY', KEYS[1], '_total', v)
  redis.call('HINCRBY', KEYS[1], 's:' .. ARGV[i + 1], v)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"#;
