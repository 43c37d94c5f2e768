-- service_announce: record a step's task on its service and tell the service's readers, once.
-- A step answered from the summary cache is announced with its result and ends at once
-- (service_step.lua: the last summary done records the advance).
--
-- KEYS[1] service hash   KEYS[2] service event stream   KEYS[3] services' due set
-- ARGV[1] step   ARGV[2] task id ('' for a cached step)   ARGV[3] events ttl (s)
-- ARGV[4] the cached result JSON ('' when the step runs as a task)
-- ARGV[5] service id   ARGV[6] now (ms)
-- Returns 1 when announced now, 0 when it had been.

--! include lib.tasks:service_step

if redis.call('HSETNX', KEYS[1], 'task:' .. ARGV[1], ARGV[2]) == 0 then return 0 end
local data = {step = ARGV[1], task_id = ARGV[2]}
if ARGV[4] ~= '' then
  data.task_id = cjson.null
  data.cached = true
end
redis.call('XADD', KEYS[2], '*', 'type', 'step', 'data', cjson.encode(data))
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'type', 'result',
    'data', '{"step":' .. cjson.encode(ARGV[1]) .. ',"task_id":null,"data":' .. ARGV[4] .. '}')
  service_step(KEYS[1], KEYS[3], ARGV[5], ARGV[1], 'done', '', tonumber(ARGV[6]))
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
