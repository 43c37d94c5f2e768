-- start: may this delivery run now? (worker, before the LLM call)
-- Skips cancelled/terminal tasks (redelivery), purges expired leases, takes a lease on the
-- first candidate pool with room, and lets a queued task start only while its rank in the
-- waiting order (priority, then FIFO) is below that pool's free slots, so tasks ahead of it
-- keep theirs. A task whose previous attempt's lease expired (crashed worker) restarts.
--
-- KEYS[1] task hash   KEYS[2] queue waiting ZSET   KEYS[3] queue wait-times list
-- KEYS[4] event stream
-- KEYS[5..] slot pools (ZSET lease id -> expiry ms), primary model first, then fallbacks
--
-- ARGV[1] now (ms)   ARGV[2] lease length (ms)   ARGV[3] new lease id   ARGV[4] message id
-- ARGV[5] retry-after (s) when it may not start   ARGV[6] events ttl (s)   ARGV[7] task id
-- ARGV[8..7+n] slot limit of each of the n pools, same order as KEYS[5..]
-- ARGV[8+n..7+2n] model id of each pool, same order
--
-- Returns one of:
--   {"skip", status}                          nothing to do (missing, cancelled, terminal)
--   {"wait", retry_after_s, reason}           not now: "busy" (live attempt) or "slots"
--   {"run", pool_index (1-based), attempt, restarted (0/1)}

local now = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local lease_id = ARGV[3]
local retry_after = tonumber(ARGV[5])
local task_id = ARGV[7]
local npools = #KEYS - 4

local t = redis.call('HMGET', KEYS[1], 'status', 'lease', 'pool_index', 'attempts', 'created_ms')
local status = t[1]
if not status then return {'skip', 'missing'} end
if status ~= 'queued' and status ~= 'running' then return {'skip', status} end

for i = 1, npools do
  redis.call('ZREMRANGEBYSCORE', KEYS[4 + i], '-inf', now)
end

local restarted = 0
local rank = 0
if status == 'running' then
  local held = tonumber(t[3] or '0')
  if held > 0 and redis.call('ZSCORE', KEYS[4 + held], t[2]) then
    -- Another attempt holds a live lease: a duplicate delivery. Come back later.
    return {'wait', retry_after, 'busy'}
  end
  restarted = 1 -- the previous attempt's lease expired (crashed worker): take over
else
  rank = redis.call('ZRANK', KEYS[2], task_id) or 0
end

local chosen = 0
for i = 1, npools do
  local free = tonumber(ARGV[7 + i]) - redis.call('ZCARD', KEYS[4 + i])
  if rank < free then
    chosen = i
    break
  end
end
if chosen == 0 then
  return {'wait', retry_after, 'slots'}
end

redis.call('ZADD', KEYS[4 + chosen], now + lease_ms, lease_id)
local attempt = tonumber(t[4] or '0') + 1
redis.call('HSET', KEYS[1], 'status', 'running', 'lease', lease_id, 'pool_index', chosen,
  'attempts', attempt, 'message_id', ARGV[4], 'attempt_ms', now)
local model = ARGV[8 + npools + chosen - 1]
if model then redis.call('HSET', KEYS[1], 'model', model) end
if restarted == 0 then
  redis.call('ZREM', KEYS[2], task_id)
  local waited = now - tonumber(t[5] or now)
  redis.call('HSET', KEYS[1], 'started_ms', now, 'wait_ms', waited)
  redis.call('LPUSH', KEYS[3], waited)
  redis.call('LTRIM', KEYS[3], 0, 99)
else
  redis.call('XADD', KEYS[4], '*', 'type', 'restart', 'data', cjson.encode({attempt = attempt}))
end
redis.call('XADD', KEYS[4], '*', 'type', 'started',
  'data', cjson.encode({model = model or '', attempt = attempt}))
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
return {'run', chosen, attempt, restarted}
