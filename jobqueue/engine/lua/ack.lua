-- Acknowledge a finished job: drop its lease and its entity mapping. If a pop found jobs
-- held back by their key's limit (keyfull, see flow_pop.lua), the freed place wakes an
-- idle worker, as a push does.
-- KEYS[1] leases    sorted set: job id -> lease deadline (ms)
-- KEYS[2] entities  hash: entity id -> job id
-- KEYS[3] abort     set of job ids asked to abort
-- KEYS[4] metrics   hash: the topic's counters and histogram buckets
-- KEYS[5] keyfull   flag: a pop passed over jobs whose key was full
-- KEYS[6] wake      list that idle workers block on (BLPOP)
-- ARGV[1] job id
-- ARGV[2] entity id or ""
-- ARGV[3] a tally for the topic's metrics hash: "field=integer" pairs, space-separated, or ""
-- Returns 1 if the job was leased, 0 otherwise.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
redis.call('SREM', KEYS[3], ARGV[1])
for field, amount in string.gmatch(ARGV[3], '(%S+)=(%S+)') do
  redis.call('HINCRBY', KEYS[4], field, amount)
end
if removed == 1 and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], 0, 63)
end
return removed
