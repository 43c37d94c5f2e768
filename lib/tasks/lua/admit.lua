-- admit: register a new task in one round trip (producer).
-- Order: rate limit -> idempotency -> per-user lock -> quota (tier) -> backpressure -> register.
-- Nothing is written unless the task is admitted.
--
-- KEYS[1]  rate window ZSET            rate:{user}:tasks
-- KEYS[2]  idempotency key             idem:{digest} (value: JSON summary of the task)
-- KEYS[3]  per-user task-kind lock     lock:user:{user}:{kind}
-- KEYS[4]  quota balance               quota:{user}
-- KEYS[5]  paid queue pending counter  queue:{paid_queue}:pending
-- KEYS[6]  paid queue waiting ZSET     queue:{paid_queue}:waiting
-- KEYS[7]  free queue pending counter  queue:{free_queue}:pending
-- KEYS[8]  free queue waiting ZSET     queue:{free_queue}:waiting
-- KEYS[9]  task hash                   task:{task_id}
-- KEYS[10] event stream                cs:events:{user}:{service}:{task_id}
-- KEYS[11] paid queue specs hash       queue:{paid_queue}:specs
-- KEYS[12] free queue specs hash       queue:{free_queue}:specs
-- KEYS[13] client-address rate window  rate:ip:{address}:tasks (trial callers; unused otherwise)
-- KEYS[14] paid queue run times        queue:{paid_queue}:runs
-- KEYS[15] free queue run times        queue:{free_queue}:runs
-- KEYS[16..] slot pools: the paid route's (ARGV[28] of them), then the free route's
--
-- ARGV[1]  now (ms)           ARGV[2]  rate limit        ARGV[3]  rate window (ms)
-- ARGV[4]  task id            ARGV[5]  idempotency ttl (ms)
-- ARGV[6]  cost of a paid task (units)
-- ARGV[7]  queue max pending  ARGV[8]  queue-full retry-after (s)
-- ARGV[9]  waiting score (priority band + now)
-- ARGV[10] task ttl (s)       ARGV[11] events ttl (s)     ARGV[12] user lock ttl (ms)
-- ARGV[13] user  ARGV[14] template  ARGV[15] service  ARGV[16] lang  ARGV[17] priority
-- ARGV[18] paid queue  ARGV[19] paid models (csv)  ARGV[20] paid mode  ARGV[21] paid modality
-- ARGV[22] free queue  ARGV[23] free models (csv)  ARGV[24] free mode  ARGV[25] free modality
-- ARGV[26] idempotency digest (kept on the task so cancel can clear it)
-- ARGV[27] the task's spec (JSON): any delivery of its queue may start it (start.lua)
-- ARGV[28] number of paid pools   ARGV[29] limit of the client-address window (0 = none)
-- ARGV[30] the tier decided by a service ('' = by quota): its tasks run on it and are not
--   charged one by one (the service was), nor counted in the rate window (the create was)
-- ARGV[31] the service step ('' for a task of its own)
-- ARGV[32..] slot limit of each pool, same order as KEYS[16..]
--
-- Returns one of:
--   {"rate_limited", retry_after_s}
--   {"existing", task_id, tier, queue, models, mode, position (0 = not waiting)}
--   {"locked", running_task_id}
--   {"queue_full", retry_after_s, tier}
--   {"admitted", task_id, tier, queue, models, mode, position, expected wait s (-1 = none)}
-- An admitted task that cannot start at once (more tasks ahead than free slots) gets a
-- `backpressure` event after `queued`: its position and the expected wait.

local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local task_id = ARGV[4]
local ip_limit = tonumber(ARGV[29])
local forced = ARGV[30]

local function position(waiting, id)
  local rank = redis.call('ZRANK', waiting, id)
  if rank then return rank + 1 end
  return 0
end

local function retry_of(key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil((tonumber(oldest[2]) + window - now) / 1000))
end

-- 1. rate limit: sliding windows of admitted tasks (the caller's, and its address's)
if forced == '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= limit then return {'rate_limited', retry_of(KEYS[1])} end
end
if ip_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', now - window)
  if redis.call('ZCARD', KEYS[13]) >= ip_limit then
    return {'rate_limited', retry_of(KEYS[13])}
  end
end

-- 2. idempotency: the same request returns the task it created (queued, running or done;
--    a failed or cancelled task released the key, so the request makes a new one)
local existing = redis.call('GET', KEYS[2])
if existing then
  local t = cjson.decode(existing)
  local waiting = KEYS[6]
  if t.tier == 'free' then waiting = KEYS[8] end
  return {'existing', t.id, t.tier, t.queue, t.models, t.mode, position(waiting, t.id)}
end

-- 3. one running task per user and task kind
local running = redis.call('GET', KEYS[3])
if running then
  return {'locked', running}
end

-- 4. quota decides the tier
local cost = tonumber(ARGV[6])
local balance = tonumber(redis.call('GET', KEYS[4]) or '0')
local npaid = tonumber(ARGV[28])
local tier, pending, waiting, specs, runs, q, models, mode, modality, first, last
if forced == 'paid' or (forced == '' and cost > 0 and balance >= cost) then
  tier, pending, waiting, specs, runs = 'paid', KEYS[5], KEYS[6], KEYS[11], KEYS[14]
  q, models, mode, modality = ARGV[18], ARGV[19], ARGV[20], ARGV[21]
  first, last = 1, npaid
  if forced ~= '' then cost = 0 end
else
  tier, pending, waiting, specs, runs = 'free', KEYS[7], KEYS[8], KEYS[12], KEYS[15]
  q, models, mode, modality = ARGV[22], ARGV[23], ARGV[24], ARGV[25]
  first, last = npaid + 1, #KEYS - 15
  cost = 0
end

-- 5. backpressure on the chosen queue
if tonumber(redis.call('GET', pending) or '0') >= tonumber(ARGV[7]) then
  return {'queue_full', tonumber(ARGV[8]), tier}
end

-- 6. register
if cost > 0 then redis.call('DECRBY', KEYS[4], cost) end
redis.call('INCR', pending)
redis.call('ZADD', waiting, ARGV[9], task_id)
redis.call('HSET', specs, task_id, ARGV[27])
redis.call('HSET', KEYS[9],
  'id', task_id, 'user', ARGV[13], 'template', ARGV[14], 'service', ARGV[15],
  'lang', ARGV[16], 'priority', ARGV[17], 'tier', tier, 'queue', q, 'models', models,
  'model', string.match(models, '^[^,]+'), 'mode', mode, 'modality', modality,
  'status', 'queued', 'created_ms', now, 'attempts', 0, 'cost', cost, 'idem', ARGV[26],
  'score', ARGV[9], 'step', ARGV[31])
redis.call('EXPIRE', KEYS[9], tonumber(ARGV[10]))
redis.call('SET', KEYS[3], task_id, 'PX', tonumber(ARGV[12]))
redis.call('SET', KEYS[2], cjson.encode({id = task_id, tier = tier, queue = q, models = models, mode = mode}),
  'PX', tonumber(ARGV[5]))
if forced == '' then
  redis.call('ZADD', KEYS[1], now, task_id)
  redis.call('PEXPIRE', KEYS[1], window)
end
if ip_limit > 0 and forced == '' then
  redis.call('ZADD', KEYS[13], now, task_id)
  redis.call('PEXPIRE', KEYS[13], window)
end
local pos = position(waiting, task_id)
redis.call('XADD', KEYS[10], '*', 'type', 'queued', 'data', cjson.encode({position = pos}))

-- 7. will it wait? free slots of its pools now, against the tasks ahead of it
local free, slots = 0, 0
for i = first, last do
  local lim = tonumber(ARGV[31 + i])
  slots = slots + lim
  free = free + math.max(0, lim - redis.call('ZCOUNT', KEYS[15 + i], now + 1, '+inf'))
end
local expected = -1
if pos > free then
  local recent = redis.call('LRANGE', runs, 0, 19)
  if #recent > 0 then
    local sorted = {}
    for i, v in ipairs(recent) do sorted[i] = tonumber(v) end
    table.sort(sorted)
    local median = sorted[math.floor((#sorted + 1) / 2)]
    expected = math.ceil(math.ceil((pos - free) / math.max(1, slots)) * median / 1000)
  end
  local data = {position = pos, slots = slots}
  if expected >= 0 then data.expected_wait_s = expected end
  redis.call('XADD', KEYS[10], '*', 'type', 'backpressure', 'data', cjson.encode(data))
end
redis.call('EXPIRE', KEYS[10], tonumber(ARGV[11]))
return {'admitted', task_id, tier, q, models, mode, pos, expected}
