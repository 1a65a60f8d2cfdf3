-- Put back jobs the database holds as queued (or scheduled) whose push never reached Redis.
-- An id Redis already holds in the queue or the leases (or, for a scheduled job, the
-- schedule) is left alone, so a job taken by a worker meanwhile is never queued twice.
-- KEYS[1] queue      sorted set: job id -> score (see push.lua)
-- KEYS[2] seq        counter giving each push its place within a priority
-- KEYS[3] entities   hash: entity id -> job id (set only where no mapping exists)
-- KEYS[4] leases     sorted set: job id -> lease deadline (ms)
-- KEYS[5] scheduled  sorted set: job id -> due time (ms)
-- KEYS[6] schedprio  hash: scheduled job id -> priority
-- KEYS[7] wake       list that idle workers block on (BLPOP)
-- ARGV    quadruples: job id, priority (-100..100), entity id or "", due time in ms or "" for a queued job
-- Returns the ids put back.
local SHIFT = 17592186044416 -- 2^44, as in push.lua
local restored = {}
local queued = 0
for i = 1, #ARGV, 4 do
  local id, priority, entity, due = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local held = redis.call('ZSCORE', KEYS[1], id) or redis.call('ZSCORE', KEYS[4], id)
  if not held and due ~= '' then
    held = redis.call('ZSCORE', KEYS[5], id)
  end
  if not held then
    if due == '' then
      redis.call('ZREM', KEYS[5], id)
      redis.call('HDEL', KEYS[6], id)
      redis.call('ZADD', KEYS[1], (100 - priority) * SHIFT + redis.call('INCR', KEYS[2]), id)
      queued = queued + 1
    else
      redis.call('ZADD', KEYS[5], tonumber(due), id)
      redis.call('HSET', KEYS[6], id, priority)
    end
    if entity ~= '' then
      redis.call('HSETNX', KEYS[3], entity, id)
    end
    restored[#restored + 1] = id
  end
end
if queued > 0 then
  local tokens = {}
  for i = 1, math.min(queued, 64) do tokens[i] = '1' end
  redis.call('RPUSH', KEYS[7], unpack(tokens))
  redis.call('LTRIM', KEYS[7], 0, 63)
end
return restored
