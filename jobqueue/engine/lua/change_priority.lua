-- Change the priority of a queued or scheduled job, keeping its FIFO place within the priority.
-- KEYS[1] queue      sorted set: job id -> (100 - priority) * 2^44 + sequence
-- KEYS[2] entities   hash: entity id -> job id
-- KEYS[3] scheduled  sorted set
-- KEYS[4] schedprio  hash: scheduled job id -> priority
-- ARGV[1] job id, or "" to find it by entity id
-- ARGV[2] entity id (used when ARGV[1] is "")
-- ARGV[3] new priority (-100..100)
-- Returns the job id changed, or false if it is neither queued nor scheduled.
local SHIFT = 17592186044416
local id = ARGV[1]
if id == '' then
  id = redis.call('HGET', KEYS[2], ARGV[2])
  if not id then return false end
end
local priority = tonumber(ARGV[3])
local score = redis.call('ZSCORE', KEYS[1], id)
if score then
  local seq = tonumber(score) % SHIFT
  redis.call('ZADD', KEYS[1], (100 - priority) * SHIFT + seq, id)
  return id
end
if redis.call('ZSCORE', KEYS[3], id) then
  redis.call('HSET', KEYS[4], id, priority)
  return id
end
return false
