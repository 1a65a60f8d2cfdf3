-- Push jobs onto a topic's queue: highest priority first, FIFO within a priority.
-- KEYS[1] queue      sorted set: job id -> score
-- KEYS[2] seq        counter giving each push its place within a priority
-- KEYS[3] entities   hash: entity id -> job id (active jobs only)
-- KEYS[4] leases     sorted set: job id -> lease deadline (ms); a pushed id is no longer leased
-- KEYS[5] scheduled  sorted set: job id -> due time (ms); a pushed id is no longer scheduled
-- KEYS[6] schedprio  hash: scheduled job id -> priority
-- KEYS[7] wake       list that idle workers block on (BLPOP)
-- KEYS[8] metrics    hash: the topic's counters and histogram buckets
-- ARGV[1] a tally for the topic's metrics hash: "field=integer" pairs, space-separated, or ""
-- ARGV[2..] triples: job id, priority (-100..100), entity id or ""
-- Returns the number of ids added to the queue (an id already queued keeps its place).
local SHIFT = 17592186044416 -- 2^44: score = (100 - priority) * 2^44 + sequence
local added = 0
for i = 2, #ARGV, 3 do
  local id, priority, entity = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HDEL', KEYS[6], id)
  if not redis.call('ZSCORE', KEYS[1], id) then
    local seq = redis.call('INCR', KEYS[2])
    redis.call('ZADD', KEYS[1], (100 - priority) * SHIFT + seq, id)
    added = added + 1
  end
  if entity ~= '' then
    redis.call('HSET', KEYS[3], entity, id)
  end
end
for field, amount in string.gmatch(ARGV[1], '(%S+)=(%S+)') do
  redis.call('HINCRBY', KEYS[8], field, amount)
end
if added > 0 then
  local tokens = {}
  for i = 1, math.min(added, 64) do tokens[i] = '1' end
  redis.call('RPUSH', KEYS[7], unpack(tokens))
  redis.call('LTRIM', KEYS[7], 0, 63)
end
return added
