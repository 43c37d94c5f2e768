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
--
-- Returns one of:
--   {"rate_limited", retry_after_s}
--   {"existing", task_id, tier, queue, models, mode, position}
--   {"locked", running_task_id}
--   {"queue_full", retry_after_s, tier}
--   {"admitted", task_id, tier, queue, models, mode, position}

local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local task_id = ARGV[4]

local function position(waiting, id)
  local rank = redis.call('ZRANK', waiting, id)
  if rank then return rank + 1 end
  return 0
end

-- 1. rate limit: sliding window of admitted tasks
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local retry = math.ceil((tonumber(oldest[2]) + window - now) / 1000)
  if retry < 1 then retry = 1 end
  return {'rate_limited', retry}
end

-- 2. idempotency: the same request returns the task it created
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
local tier, pending, waiting, specs, q, models, mode, modality
if cost > 0 and balance >= cost then
  tier, pending, waiting, specs = 'paid', KEYS[5], KEYS[6], KEYS[11]
  q, models, mode, modality = ARGV[18], ARGV[19], ARGV[20], ARGV[21]
else
  tier, pending, waiting, specs = 'free', KEYS[7], KEYS[8], KEYS[12]
  q, models, mode, modality = ARGV[22], ARGV[23], ARGV[24], ARGV[25]
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
  'score', ARGV[9])
redis.call('EXPIRE', KEYS[9], tonumber(ARGV[10]))
redis.call('SET', KEYS[3], task_id, 'PX', tonumber(ARGV[12]))
redis.call('SET', KEYS[2], cjson.encode({id = task_id, tier = tier, queue = q, models = models, mode = mode}),
  'PX', tonumber(ARGV[5]))
redis.call('ZADD', KEYS[1], now, task_id)
redis.call('PEXPIRE', KEYS[1], window)
local pos = position(waiting, task_id)
redis.call('XADD', KEYS[10], '*', 'type', 'queued', 'data', cjson.encode({position = pos}))
redis.call('EXPIRE', KEYS[10], tonumber(ARGV[11]))
return {'admitted', task_id, tier, q, models, mode, pos}
