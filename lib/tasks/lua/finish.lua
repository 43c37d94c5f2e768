-- finish: end an attempt (worker `finally`, and the failure callback). Idempotent.
-- Releases the lease, the backpressure count and the user lock; writes the terminal state
-- and the last events; refunds the quota on failure (and for a degraded result); queues usage
-- rows for Postgres.
--
-- KEYS[1] task hash   KEYS[2] slot pool of this attempt's lease (any pool key when none)
-- KEYS[3] queue pending counter   KEYS[4] queue waiting ZSET   KEYS[5] per-user lock
-- KEYS[6] quota   KEYS[7] event stream   KEYS[8] usage stream   KEYS[9] queue specs hash
-- KEYS[10] the delivering message's own task hash (its `ran:{message}` mark is cleared)
-- KEYS[11] the task's idempotency key (released on failure: the request may be sent again)
-- KEYS[12] the queue's recent run times (ms, capped list: admission's expected wait)
-- KEYS[13] the task's service hash   KEYS[14] the services' due set (service tasks only;
--   any key otherwise)
-- KEYS[15..] the queue's slot pools (a dead attempt's lease is released from its pool)
--
-- ARGV[1] lease member ('' = no lease: failure callback / never started)
-- ARGV[2] status: "done" | "failed" | "lost" (the attempt lost its lease: record its usage,
--   leave the task running for the redelivery to take over)   ARGV[3] now (ms)   ARGV[4] task id
-- ARGV[5] result JSON ('' = none)     ARGV[6] error code   ARGV[7] error message
-- ARGV[8] done-event JSON (usage, cost, latency; '' = none)
-- ARGV[9] usage rows JSON array ('' = none)   ARGV[10] events ttl (s)   ARGV[11] task ttl (s)
-- ARGV[12] the delivering message id ('' = none)
-- ARGV[13] '1' = a degraded result: done, flagged `degraded`, and the paid unit refunded
-- ARGV[14] the service step ('' for a task of its own)   ARGV[15] the service id
-- then 2 values per pool, same order as KEYS[15..]: provider, output price per million tokens
--
-- Returns 1 when this call finished the task, 0 when it was already terminal or missing,
-- -1 when a newer attempt owns the task (only this attempt's lease is released),
-- 2 for "lost" when no other attempt has taken over yet (nothing else changes),
-- 3 when a call without a lease finds a live attempt running the task: nothing changes
-- (the failure callback never fails a task that is alive). When the call ends a service's
-- step, the transition it causes is recorded in the service (service_step.lua) and in the
-- due set, for the caller to carry out.

--! include attempt_row
--! include service_step

local lease_id = ARGV[1]
local status = ARGV[2]
local now = tonumber(ARGV[3])
local task_id = ARGV[4]
local t = redis.call('HMGET', KEYS[1], 'status', 'lease', 'cost', 'pool_index', 'attempt_ms')

if ARGV[9] ~= '' then
  redis.call('XADD', KEYS[8], '*', 'rows', ARGV[9])
end
if lease_id ~= '' then redis.call('ZREM', KEYS[2], lease_id) end
if status ~= 'lost' and ARGV[12] ~= ''
    and redis.call('HGET', KEYS[10], 'ran:' .. ARGV[12]) == task_id then
  -- The message's job is done (a lost attempt's redelivery follows the mark instead).
  redis.call('HDEL', KEYS[10], 'ran:' .. ARGV[12])
end
if not t[1] or (t[1] ~= 'queued' and t[1] ~= 'running') then return 0 end
if lease_id ~= '' and t[2] ~= lease_id then return -1 end
if lease_id ~= '' then redis.call('HDEL', KEYS[1], 'open') end -- its rows are ARGV[9]
if status == 'lost' then return 2 end

if lease_id == '' and t[2] then
  -- Failed without a process (failure callback): release the dead attempt's lease, log it.
  local held = tonumber(t[4] or '0')
  if held > 0 and KEYS[14 + held] then
    local expiry = redis.call('ZSCORE', KEYS[14 + held], t[2])
    if expiry and tonumber(expiry) > now then return 3 end
    redis.call('ZREM', KEYS[14 + held], t[2])
    close_attempt(KEYS[1], KEYS[7], KEYS[8], now, ARGV[15 + (held - 1) * 2 + 1],
      tonumber(ARGV[15 + (held - 1) * 2 + 2]))
  end
end
redis.call('ZREM', KEYS[4], task_id) -- failed before it started, or waiting for a restart
redis.call('HDEL', KEYS[9], task_id)
if tonumber(redis.call('DECR', KEYS[3])) <= 0 then redis.call('DEL', KEYS[3]) end
if redis.call('GET', KEYS[5]) == task_id then redis.call('DEL', KEYS[5]) end
local cost = tonumber(t[3] or '0')
local refunded = 0
local degraded = status == 'done' and ARGV[13] == '1'
if degraded then redis.call('HSET', KEYS[1], 'degraded', 1) end
if (status ~= 'done' or degraded) and cost > 0 then
  redis.call('INCRBY', KEYS[6], cost)
  refunded = cost
end
if status ~= 'done' then
  local idem = redis.call('GET', KEYS[11])
  if idem and cjson.decode(idem).id == task_id then redis.call('DEL', KEYS[11]) end
end

redis.call('HSET', KEYS[1], 'status', status, 'finished_ms', now, 'refunded', refunded)
redis.call('HDEL', KEYS[1], 'lease')
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'result', ARGV[5])
  redis.call('XADD', KEYS[7], '*', 'type', 'result', 'data', ARGV[5])
end
if status == 'done' then
  if lease_id ~= '' and t[5] then
    redis.call('LPUSH', KEYS[12], now - tonumber(t[5]))
    redis.call('LTRIM', KEYS[12], 0, 99)
  end
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'usage', ARGV[8]) end
  redis.call('XADD', KEYS[7], '*', 'type', 'done', 'data', ARGV[8] ~= '' and ARGV[8] or '{}')
else
  redis.call('HSET', KEYS[1], 'error', ARGV[6], 'error_message', ARGV[7])
  redis.call('XADD', KEYS[7], '*', 'type', 'error',
    'data', cjson.encode({code = ARGV[6], message = ARGV[7]}))
end
redis.call('EXPIRE', KEYS[7], tonumber(ARGV[10]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[11]))
service_step(KEYS[13], KEYS[14], ARGV[15], ARGV[14], status, ARGV[6], now)
return 1
