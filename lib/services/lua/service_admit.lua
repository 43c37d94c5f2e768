-- service_admit: register a new service in one round trip (producer, POST /api/service/create).
-- Order: rate limit -> idempotency -> pending limit -> quota (tier, debited once) -> register.
-- Nothing is written unless the service is admitted. Its tasks are admitted later, on the
-- service's tier and outside the rate window: the create call is what is counted.
--
-- KEYS[1] rate window ZSET (rate:{user}:services)   KEYS[2] client-address window
-- KEYS[3] idempotency key   KEYS[4] the user's pending services ZSET (score: created ms)
-- KEYS[5] quota
-- KEYS[6] service hash   KEYS[7] service event stream
--
-- ARGV[1] now (ms)   ARGV[2] rate limit   ARGV[3] rate window (ms)
-- ARGV[4] client-address limit (0 = none)   ARGV[5] idempotency ttl (ms)
-- ARGV[6] most pending services   ARGV[7] the depth's cost (units)   ARGV[8] service id
-- ARGV[9] user   ARGV[10] depth   ARGV[11] lang   ARGV[12] summaries to run (0: all cached)
-- ARGV[13] service ttl (s)   ARGV[14] events ttl (s)   ARGV[15] idempotency digest
--
-- Returns {"rate_limited", retry_after_s} | {"existing", service_id} |
--   {"too_many", most pending} | {"admitted", tier, cost}

local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
local id = ARGV[8]

local function limited(key, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then return nil end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return math.max(1, math.ceil((tonumber(oldest[2]) + window - now) / 1000))
end

local retry = limited(KEYS[1], tonumber(ARGV[2]))
if not retry and tonumber(ARGV[4]) > 0 then retry = limited(KEYS[2], tonumber(ARGV[4])) end
if retry then return {'rate_limited', retry} end

local existing = redis.call('GET', KEYS[3])
if existing then return {'existing', existing} end

-- A service older than its own record's lifetime no longer counts (it cannot be running).
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[13]) * 1000)
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[6]) then
  return {'too_many', tonumber(ARGV[6])}
end

local cost = tonumber(ARGV[7])
local tier = 'free'
if cost > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') >= cost then
  tier = 'paid'
  redis.call('DECRBY', KEYS[5], cost)
else
  cost = 0
end

local left = tonumber(ARGV[12])
local stage = 'summaries'
if left == 0 then stage = 'advancing' end
redis.call('HSET', KEYS[6], 'id', id, 'user', ARGV[9], 'status', 'running', 'stage', stage,
  'depth', ARGV[10], 'lang', ARGV[11], 'tier', tier, 'cost', cost, 'left', left,
  'created_ms', now, 'refunded', 0, 'idem', ARGV[15])
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[13]))
redis.call('ZADD', KEYS[4], now, id)
redis.call('SET', KEYS[3], id, 'PX', tonumber(ARGV[5]))
redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], window)
if tonumber(ARGV[4]) > 0 then
  redis.call('ZADD', KEYS[2], now, id)
  redis.call('PEXPIRE', KEYS[2], window)
end
redis.call('XADD', KEYS[7], '*', 'type', 'service',
  'data', cjson.encode({status = 'running', tier = tier, depth = ARGV[10]}))
redis.call('EXPIRE', KEYS[7], tonumber(ARGV[14]))
return {'admitted', tier, cost}
