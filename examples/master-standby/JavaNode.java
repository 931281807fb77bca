/*
 * One node of a master/standby pair, in Java (its twins: rust_node.rs, python_node.py and the
 * Kotlin KotlinNode.kt): it campaigns for mastership and does "work" -- appends
 * `<fencing token> <id>` to a shared file every 50 ms -- only while it leads: right before each
 * unit of work it asks `elector.leadership()`, which is valid only while the lease's last
 * confirmed heartbeat listed the leadership and only until that heartbeat's send time + the
 * lease's ttl, and it writes with that leadership's fencing token. It hears about leadership the
 * Apache Curator way, through a LeaderListener (isLeader / notLeader).
 *
 *     java -cp "$(clients/java/build.sh)" JavaNode --endpoints 127.0.0.1:7710 --election ledger \
 *         --id node-c --priority 1 --ttl-ms 2000 --work-file /tmp/work.log --preempt
 *
 * It prints one line per event on stdout: `ready <lease id>` once it campaigns,
 * `elected <term> <fencing token>`, `lost <reason>`, and `bye` after a SIGTERM (or SIGINT) made
 * it resign and revoke its lease. When its candidacy ends (its lease ended) it prints
 * `lost candidacy-ended` and exits with status 1.
 */

import io.zkcoord.client.LeaderElector;
import io.zkcoord.client.LeaderListener;
import io.zkcoord.client.Leadership;
import io.zkcoord.client.LeaseKeeper;
import io.zkcoord.client.ZkcoordClient;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;

public final class JavaNode {
    /** How often a leader does a unit of work, in milliseconds. */
    static final long WORK_INTERVAL_MS = 50;

    private JavaNode() {}

    static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>(Map.of("--priority", "0", "--ttl-ms", "2000"));
        for (int i = 0; i < argv.length; i++) {
            if (argv[i].equals("--preempt")) {
                args.put("--preempt", "true");
            } else {
                args.put(argv[i], argv[++i]);
            }
        }
        String id = args.get("--id");
        Path work = Path.of(args.get("--work-file"));
        // The (term, fencing token) last announced as `elected`, or null.
        AtomicReference<long[]> announced = new AtomicReference<>();
        CountDownLatch stopping = new CountDownLatch(1);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stopping.countDown();
            try {
                stopped.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }));

        ZkcoordClient client = ZkcoordClient.connect(args.get("--endpoints"));
        LeaseKeeper lease = LeaseKeeper.grant(client, id, Long.parseLong(args.get("--ttl-ms")));
        LeaderElector.Builder campaign = LeaderElector.builder(client, lease, args.get("--election"), id)
                .priority(Integer.parseInt(args.get("--priority")))
                .listener(new LeaderListener() {
                    @Override
                    public void isLeader(long term, long fencingToken) {
                        announced.set(new long[] {term, fencingToken});
                        say("elected " + term + " " + fencingToken);
                    }

                    @Override
                    public void notLeader(String reason) {
                        announced.set(null);
                        say("lost " + reason);
                    }
                });
        if (args.containsKey("--preempt")) {
            campaign.preempt(true);
        }
        LeaderElector elector = campaign.campaign();
        say("ready " + lease.id());

        while (stopping.getCount() > 0) {
            if (elector.isOver()) {
                say("lost candidacy-ended");
                client.close();
                stopped.countDown();
                System.exit(1);
            }
            // The safety rule: work only while the leadership is valid, checked right before each
            // unit of work, with its own fencing token (and only once it was announced). Longer
            // units of work would also make sure to end before `validUntilNanos()`.
            Optional<Leadership> leadership = elector.leadership();
            long[] told = announced.get();
            if (leadership.isPresent() && told != null && leadership.get().term() == told[0]
                    && leadership.get().fencingToken() == told[1] && stopping.getCount() > 0) {
                append(work, leadership.get().fencingToken() + " " + id + "\n");
            }
            stopping.await(WORK_INTERVAL_MS, java.util.concurrent.TimeUnit.MILLISECONDS);
        }
        elector.resign();
        lease.revoke();
        client.close();
        say("bye");
        stopped.countDown();
    }

    static void append(Path work, String line) throws IOException {
        Files.writeString(work, line, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }
}
