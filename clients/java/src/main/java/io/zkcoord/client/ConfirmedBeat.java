package io.zkcoord.client;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import zkcoord.v1.LeaseOuterClass.Leadership;
import zkcoord.v1.LeaseOuterClass.OwnedShards;
import zkcoord.v1.LeaseOuterClass.ShardOwnership;

/**
 * The answer to a lease's last confirmed heartbeat: the authority for every ownership (see the
 * README's client rules).
 *
 * @param untilNanos the heartbeat's send time + the lease's granted ttl ({@link System#nanoTime()}):
 *     nothing this heartbeat covered may be acted on from then on
 * @param elections the elections the heartbeat named
 * @param leaderships the leaderships its answer listed, among {@code elections}
 * @param shardGroups the shard groups the heartbeat named
 * @param shards the shard ownerships its answer listed, in {@code shardGroups}
 */
public record ConfirmedBeat(
        long untilNanos, Set<String> elections, List<Leadership> leaderships, Set<String> shardGroups, List<ShardOwnership> shards) {

    static ConfirmedBeat grant(long untilNanos) {
        return new ConfirmedBeat(untilNanos, Set.of(), List.of(), Set.of(), List.of());
    }

    /** Whether the heartbeat named {@code election}. */
    public boolean names(String election) {
        return elections.contains(election);
    }

    /** Whether the heartbeat named shard group {@code group}. */
    public boolean namesGroup(String group) {
        return shardGroups.contains(group);
    }

    /** The listed leadership of {@code candidateId} in {@code election}, if any. */
    public Optional<Leadership> leadership(String election, String candidateId) {
        return leaderships.stream()
                .filter(l -> l.getElection().equals(election) && l.getCandidateId().equals(candidateId))
                .findFirst();
    }

    /** The shards the answer listed for {@code memberId} in {@code group}, as shard → epoch. */
    public Map<Integer, Long> ownedShards(String group, String memberId) {
        Map<Integer, Long> owned = new TreeMap<>();
        for (ShardOwnership listed : shards) {
            if (listed.getGroup().equals(group) && listed.getMemberId().equals(memberId)) {
                for (OwnedShards run : listed.getRangesList()) {
                    for (long shard = run.getFirst(); shard <= run.getLast(); shard++) {
                        owned.put((int) shard, run.getEpoch());
                    }
                }
            }
        }
        return owned;
    }
}
