-- cancel: cancel a task that has not started (producer). Refund, unlock, unqueue. Its
-- message stays at the queue: a delivery is a ticket for the queue (start.lua), so it
-- starts the next waiting task or ends.
--
-- KEYS[1] task hash   KEYS[2] queue pending counter   KEYS[3] queue waiting ZSET
-- KEYS[4] per-user lock   KEYS[5] quota   KEYS[6] event stream   KEYS[7] idempotency key
-- KEYS[8] queue specs hash   KEYS[9] the task's service hash   KEYS[10] the services' due set
-- ARGV[1] task id   ARGV[2] user id (owner)   ARGV[3] now (ms)   ARGV[4] events ttl (s)
--
-- Returns {"cancelled", refunded} | {"not_found"} | {"not_cancellable", status}
-- A service's step that is cancelled fails its service (service_step.lua).

--! include service_step

local task_id = ARGV[1]
local t = redis.call('HMGET', KEYS[1], 'status', 'user', 'cost', 'step', 'service')
if not t[1] or t[2] ~= ARGV[2] then return {'not_found'} end
if t[1] ~= 'queued' then return {'not_cancellable', t[1]} end

local cost = tonumber(t[3] or '0')
if cost > 0 then redis.call('INCRBY', KEYS[5], cost) end
redis.call('ZREM', KEYS[3], task_id)
redis.call('HDEL', KEYS[8], task_id)
if tonumber(redis.call('DECR', KEYS[2])) <= 0 then redis.call('DEL', KEYS[2]) end
if redis.call('GET', KEYS[4]) == task_id then redis.call('DEL', KEYS[4]) end
local idem = redis.call('GET', KEYS[7])
if idem and cjson.decode(idem).id == task_id then redis.call('DEL', KEYS[7]) end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_ms', ARGV[3], 'refunded', cost)
redis.call('XADD', KEYS[6], '*', 'type', 'cancelled', 'data', cjson.encode({refunded = cost}))
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[4]))
service_step(KEYS[9], KEYS[10], t[5] or '', t[4] or '', 'cancelled', 'cancelled', tonumber(ARGV[3]))
return {'cancelled', cost}
