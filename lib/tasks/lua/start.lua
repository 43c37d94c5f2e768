-- start: a delivery is a ticket for its queue's waiting order (worker, before the LLM call).
--
-- Every admitted task publishes one message; a message starts at most one task at a time,
-- and it starts the HEAD of its queue's waiting order (priority, then FIFO), which may be
-- another task than the one its body names. So whatever order deliveries arrive in, a
-- delivery that finds a free slot is never refused because another task is ahead: it
-- starts that task instead. A ticket whose own task already ran serves the next head, or
-- ends when nothing waits. A redelivery of a message whose attempt died waits exactly as
-- long as the dead attempt's lease has left, then takes the task over.
--
-- One call looks at one candidate task. When the ticket must look at another one (the
-- head, or the task this message started before), the reply names it with its spec and
-- the worker calls again with that task's keys: every key passes through KEYS. A head is
-- reserved by the call that names it: it leaves the waiting order and its slot is taken
-- under this ticket's lease member, which the next call (ARGV[9]) turns into the start.
-- Deliveries arriving together each reserve a different head in one call instead of all
-- racing for the same one (a herd in which each round started one task). A reservation
-- whose worker died is an expired lease like any other: the task goes back to its place.
--
-- KEYS[1] the ticket's own task hash   task:{own}   (records which task this message started)
-- KEYS[2] the candidate task hash      task:{candidate}   (may be KEYS[1])
-- KEYS[3] queue waiting ZSET   KEYS[4] queue specs hash   KEYS[5] queue wait-times list
-- KEYS[6] the candidate's event stream   KEYS[7] usage stream (rows of dead attempts)
-- KEYS[8..] slot pools (ZSET lease member -> expiry ms), primary model first, then fallbacks
--
-- ARGV[1] now (ms)   ARGV[2] lease length (ms)   ARGV[3] lease nonce   ARGV[4] message id
-- ARGV[5] candidate task id   ARGV[6] queue id   ARGV[7] events ttl (s)
-- ARGV[8] shortest retry-after (s)   ARGV[9] the lease member this ticket reserved the
--   candidate under on its previous call ('' when it did not)
-- then 4 values per pool, same order as KEYS[8..]: slot limit, model id, provider,
--   output price per million tokens (for the row of a dead attempt)
--
-- Lease members are "{queue}|{waiting score}|{task}|{nonce}": a purge of an expired lease
-- puts its task back into the waiting order at its old place, so a crashed task is
-- restarted before later ones.
--
-- Returns one of:
--   {"run", pool_index (1-based), attempt, restarted (0/1), lease member}   the candidate runs
--   {"head", task_id, spec, member}   start that task instead: it is reserved under lease
--                               `member` (call again with its keys and the member)
--   {"follow", task_id, spec}   this message started that task before: look at it
--   {"wait", retry_after_s, reason}   "busy" (a live attempt) or "slots" (no free slot)
--   {"skip", reason}            nothing waits: the ticket is spent ("no_work")

--! include attempt_row

local now = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local msg_id = ARGV[4]
local cand = ARGV[5]
local queue = ARGV[6]
local min_retry = tonumber(ARGV[8])
local npools = #KEYS - 7
local ran_field = 'ran:' .. msg_id

local reservation = ARGV[9]
local function pool_arg(i, k) return ARGV[9 + (i - 1) * 4 + k] end

-- Reclaim expired leases; this queue's tasks go back into the waiting order.
for i = 1, npools do
  local pool = KEYS[7 + i]
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', pool, '-inf', now)) do
    local q, score, task = string.match(member, '^([^|]*)|([^|]*)|([^|]*)|')
    if q == queue then
      redis.call('ZADD', KEYS[3], 'NX', score, task)
      redis.call('ZREM', pool, member)
    elseif not q then
      redis.call('ZREM', pool, member)
    end
  end
end

local function live(i) return redis.call('ZCOUNT', KEYS[7 + i], now + 1, '+inf') end

local function free_pool()
  for i = 1, npools do
    if live(i) < tonumber(pool_arg(i, 1)) then return i end
  end
  return 0
end

local function retry_for_slots()
  -- The earliest a lease can end (a dead attempt's lease expires then).
  local best = lease_ms
  for i = 1, npools do
    local first = redis.call('ZRANGEBYSCORE', KEYS[7 + i], now + 1, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if first[2] then best = math.min(best, tonumber(first[2]) - now) end
  end
  return math.max(min_retry, math.ceil(best / 1000))
end

local function bounce(retry, reason)
  -- Counted on the ticket's own task: bounces per task are a health figure (docs/bench.md).
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'bounces', 1) end
  return {'wait', retry, reason}
end

local t = redis.call('HMGET', KEYS[2], 'status', 'lease', 'pool_index', 'attempts', 'created_ms',
  'run_msg', 'score')
local status = t[1]

-- 1. What did this message start before? (a redelivery, or a duplicate)
local ran = redis.call('HGET', KEYS[1], ran_field)
if ran and ran ~= cand then
  local spec = redis.call('HGET', KEYS[4], ran)
  if spec then return {'follow', ran, spec} end
  redis.call('HDEL', KEYS[1], ran_field) -- that task has ended: the ticket is free again
  ran = nil
end

local takeover = false
if status == 'running' then
  local held = tonumber(t[3] or '0')
  local expiry = nil
  if held > 0 and held <= npools then expiry = redis.call('ZSCORE', KEYS[7 + held], t[2]) end
  if expiry and tonumber(expiry) > now then
    if ran == cand and t[6] == msg_id then
      -- This message's earlier attempt still holds a live lease: come back when it ends.
      return bounce(math.max(1, math.ceil((tonumber(expiry) - now) / 1000)), 'busy')
    end
    -- Another message runs it: this ticket is free for the head.
  elseif ran == cand and t[6] == msg_id then
    takeover = true -- this message's attempt died: take the task over now
  end
end
if ran == cand and not takeover then
  redis.call('HDEL', KEYS[1], ran_field)
end

-- 2. A head this ticket reserved on its previous call starts on the slot it holds: a
-- queued task, or one back in the waiting order after its lease expired (a restart). A
-- reservation it can no longer use (cancelled meanwhile, or its own message took it
-- over) is given back.
local reserved = 0
if reservation ~= '' then
  for i = 1, npools do
    if redis.call('ZSCORE', KEYS[7 + i], reservation) then
      local usable = status == 'queued' and not takeover
      if status == 'running' and not takeover then
        local held = tonumber(t[3] or '0')
        local expiry = nil
        if held > 0 and held <= npools then expiry = redis.call('ZSCORE', KEYS[7 + held], t[2]) end
        usable = not (expiry and tonumber(expiry) > now)
        takeover = usable
      end
      if usable then
        reserved = i
      else
        redis.call('ZREM', KEYS[7 + i], reservation)
      end
    end
  end
end

-- 3. A free ticket starts the head of the waiting order.
if not takeover and reserved == 0 then
  local head = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if not head[1] then return {'skip', 'no_work'} end
  if head[1] ~= cand then
    local pool = free_pool()
    if pool == 0 then return bounce(retry_for_slots(), 'slots') end
    local spec = redis.call('HGET', KEYS[4], head[1])
    redis.call('ZREM', KEYS[3], head[1])
    if not spec then return {'wait', min_retry, 'slots'} end -- no spec: the task has ended
    local held = queue .. '|' .. head[2] .. '|' .. head[1] .. '|' .. ARGV[3]
    redis.call('ZADD', KEYS[7 + pool], now + lease_ms, held)
    return {'head', head[1], spec, held}
  end
  if status == 'running' then
    -- Back in the waiting order after its lease expired: a restart (any ticket may do it).
    takeover = true
  elseif status ~= 'queued' then
    redis.call('ZREM', KEYS[3], cand)
    return {'wait', min_retry, 'slots'}
  end
end

-- 4. Take a slot (or the one reserved) and start the candidate.
local chosen = reserved
local member = reservation
if chosen == 0 then
  chosen = free_pool()
  if chosen == 0 then return bounce(retry_for_slots(), 'slots') end
  member = queue .. '|' .. (t[7] or '0') .. '|' .. cand .. '|' .. ARGV[3]
end
redis.call('ZADD', KEYS[7 + chosen], now + lease_ms, member)
local attempt = tonumber(t[4] or '0') + 1
if takeover then
  local old = tonumber(t[3] or '0')
  if old > 0 and old <= npools then
    redis.call('ZREM', KEYS[7 + old], t[2])
    close_attempt(KEYS[2], KEYS[6], KEYS[7], now, pool_arg(old, 3), tonumber(pool_arg(old, 4)))
  end
end
local model = pool_arg(chosen, 2)
redis.call('HSET', KEYS[2], 'status', 'running', 'lease', member, 'pool_index', chosen,
  'attempts', attempt, 'run_msg', msg_id, 'attempt_ms', now, 'model', model, 'open', attempt)
-- The new attempt's token batches count from zero; it is priced as its lease's model until
-- it falls back to another one (append_token.lua).
redis.call('HDEL', KEYS[2], 'tok_n', 'provider', 'out_price')
redis.call('HSET', KEYS[1], ran_field, cand)
redis.call('ZREM', KEYS[3], cand)
if not takeover then
  local waited = now - tonumber(t[5] or now)
  redis.call('HSET', KEYS[2], 'started_ms', now, 'wait_ms', waited)
  redis.call('LPUSH', KEYS[5], waited)
  redis.call('LTRIM', KEYS[5], 0, 99)
else
  redis.call('XADD', KEYS[6], '*', 'type', 'restart', 'data', cjson.encode({attempt = attempt}))
end
redis.call('XADD', KEYS[6], '*', 'type', 'started',
  'data', cjson.encode({model = model, attempt = attempt}))
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[7]))
return {'run', chosen, attempt, takeover and 1 or 0, member}
