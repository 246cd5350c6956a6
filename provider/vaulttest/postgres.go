package vaulttest

// A real PostgreSQL server for Vault's database secrets engine.
//
// Binaries: initdb, postgres and psql are looked up, in order, in $PG_BINDIR,
// next to a `postgres` found on $PATH (symlinks resolved, e.g. this machine's
// /usr/local/bin/postgres -> /usr/lib/postgresql/15/bin/postgres), then in the
// highest /usr/lib/postgresql/<major>/bin. On Debian 12 they come from the
// `postgresql` package (postgresql-15 has initdb/postgres, postgresql-client-15
// has psql, all in /usr/lib/postgresql/15/bin). A missing binary fails the
// test, like a missing Vault binary does.
//
// PostgreSQL refuses to run as root. When the test runs as root, initdb and
// postgres run as the `postgres` user (created by Debian's postgresql-common)
// or, if there is no such user, as `nobody`; the temp dir holding the data
// directory and the unix socket is chowned to that user. As any other user
// they simply run as that user.
//
// The server listens on a free 127.0.0.1 port only, with fsync off. Host
// connections use scram-sha-256, so a wrong password really fails. Stop kills
// it and removes the temp dir; the postmaster also gets SIGKILL if the test
// binary dies first (Pdeathsig), and a later run removes data dirs left by
// test processes that no longer exist.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// PostgresUser and PostgresDB are the superuser and database RunPostgres creates.
const (
	PostgresUser = "vault"
	PostgresDB   = "app"
)

// Postgres is a running PostgreSQL server.
type Postgres struct {
	Host     string // always 127.0.0.1
	Port     int
	User     string // superuser, PostgresUser
	Password string // random hex
	Database string // PostgresDB
	// BinDir holds initdb, postgres (and usually psql).
	BinDir string
	// StartupTime is how long initdb plus server start-up took.
	StartupTime time.Duration

	dir  string // temp dir: data/, sockets, pwfile
	psql string
	cred *syscall.Credential

	cmd      *exec.Cmd
	done     <-chan struct{}
	logs     *bytes.Buffer
	mu       sync.Mutex
	stopOnce sync.Once
}

const pgDirPrefix = "vaulttest-pg-"

// PostgresBinaries returns the directory holding initdb and postgres, and
// the psql client's path.
func PostgresBinaries() (binDir, psql string, err error) {
	var dirs []string
	if d := os.Getenv("PG_BINDIR"); d != "" {
		dirs = append(dirs, d)
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	versions, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versions, func(i, j int) bool { // highest major first
		return pgMajor(versions[i]) > pgMajor(versions[j])
	})
	dirs = append(dirs, versions...)
	for _, d := range dirs {
		if !isExecutable(filepath.Join(d, "initdb")) || !isExecutable(filepath.Join(d, "postgres")) {
			continue
		}
		psql = filepath.Join(d, "psql")
		if !isExecutable(psql) {
			if psql, err = exec.LookPath("psql"); err != nil {
				return "", "", fmt.Errorf("PostgreSQL server found in %s but no psql client: apt-get install -y postgresql-client", d)
			}
		}
		return d, psql, nil
	}
	return "", "", errors.New("no PostgreSQL server binaries (initdb, postgres) in $PG_BINDIR, next to a postgres on $PATH, " +
		"or in /usr/lib/postgresql/*/bin: install them with `apt-get install -y postgresql` " +
		"(Debian 12: /usr/lib/postgresql/15/bin/{initdb,postgres,psql})")
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// serverCredential is who initdb and postgres run as: nil (the current user)
// unless we are root.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, errors.New("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as " +
		"(`apt-get install -y postgresql` creates `postgres`)")
}

// StartPostgres runs a PostgreSQL server for the test and stops it at cleanup.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	p, err := RunPostgres()
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// RunPostgres starts a PostgreSQL server with superuser PostgresUser (random
// password) and database PostgresDB (holding one table, public.items, with
// one row); the caller must Stop it. It returns once the server accepts
// connections (bounded at 30 s).
func RunPostgres() (*Postgres, error) {
	start := time.Now()
	binDir, psql, err := PostgresBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	removeStalePGDirs()
	dir, err := os.MkdirTemp("", pgDirPrefix)
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		Host: "127.0.0.1", User: PostgresUser, Password: randomHex(16), Database: PostgresDB,
		BinDir: binDir, dir: dir, psql: psql, cred: cred, logs: &bytes.Buffer{},
	}
	ok := false
	defer func() {
		if !ok {
			p.Stop()
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if cred != nil {
		for _, f := range []string{dir, pwfile} {
			if err := os.Chown(f, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}

	initdb := exec.Command(filepath.Join(binDir, "initdb"), "-D", p.dataDir(), "-U", p.User, "--pwfile="+pwfile,
		"--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8", "--locale=C",
		"--no-sync", "--no-instructions")
	initdb.Dir = dir
	initdb.Env = p.serverEnv()
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := runBounded(initdb, 60*time.Second); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	_ = os.Remove(pwfile)

	// A free port can be taken between FreeAddr and bind: retry a few times.
	for attempt := 0; ; attempt++ {
		if err := p.startServer(); err == nil {
			break
		} else if attempt == 3 || !strings.Contains(p.Logs(), "could not bind") {
			return nil, err
		}
		p.mu.Lock()
		p.logs.Reset()
		p.mu.Unlock()
	}
	if _, err := p.Exec("postgres", "CREATE DATABASE "+p.Database); err != nil {
		return nil, err
	}
	if _, err := p.Exec(p.Database, "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one')"); err != nil {
		return nil, err
	}
	p.StartupTime = time.Since(start)
	ok = true
	return p, nil
}

func (p *Postgres) dataDir() string { return filepath.Join(p.dir, "data") }

// Dir is the temp dir holding the data directory (data/) and the unix socket.
func (p *Postgres) Dir() string { return p.dir }

// Addr is host:port.
func (p *Postgres) Addr() string { return p.Host + ":" + strconv.Itoa(p.Port) }

// URL is a postgres:// URL for the superuser and PostgresDB.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgresql://%s:%s@%s/%s?sslmode=disable", p.User, p.Password, p.Addr(), p.Database)
}

func (p *Postgres) serverEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "LANG=C", "TZ=UTC", "HOME=" + p.dir}
}

// startServer runs postgres on a fresh port and waits until it answers.
func (p *Postgres) startServer() error {
	addr, err := FreeAddr()
	if err != nil {
		return err
	}
	_, portStr, _ := strings.Cut(addr, ":")
	p.Port, _ = strconv.Atoi(portStr)

	cmd := exec.Command(filepath.Join(p.BinDir, "postgres"), "-D", p.dataDir(),
		"-c", "listen_addresses=127.0.0.1", "-c", "port="+portStr,
		"-c", "unix_socket_directories="+p.dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=50",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning",
		// Dynamic shared memory in the data dir (removed with it), not in
		// /dev/shm where a killed server would leave segments behind.
		"-c", "dynamic_shared_memory_type=mmap")
	cmd.Dir = p.dir
	cmd.Env = p.serverEnv()
	cmd.Stdout = &lockedWriter{w: p.logs, mu: &p.mu}
	cmd.Stderr = cmd.Stdout
	// Own process group, so Stop can kill stragglers; tied to this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	done, err := StartTied(cmd)
	if err != nil {
		return fmt.Errorf("run postgres: %w", err)
	}
	p.cmd, p.done = cmd, done

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("postgres exited: %s", p.Logs())
		default:
		}
		_, err := p.Exec("postgres", "SELECT 1")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("postgres not ready after 30s: %w; logs: %s", err, p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Logs returns what the server printed so far.
func (p *Postgres) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// kill stops the running server: fast shutdown (SIGINT), then SIGKILL to its
// process group after 10 s.
func (p *Postgres) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	// Backends exit on their own once the postmaster is gone; make sure.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	p.cmd = nil
}

// Stop shuts the server down and removes its temp dir. Safe to call twice.
func (p *Postgres) Stop() {
	p.stopOnce.Do(func() {
		p.kill()
		if p.dir != "" {
			_ = os.RemoveAll(p.dir)
		}
	})
}

// removeStalePGDirs removes temp dirs left by test processes that died
// without cleaning up (their owner.pid process no longer exists).
func removeStalePGDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), pgDirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			if pm, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
				if pmPid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pm), "\n", 2)[0])); err == nil && pmPid > 0 {
					if syscall.Kill(pmPid, 0) == nil {
						continue // its server still runs: leave it alone
					}
				}
			}
			_ = os.RemoveAll(d)
		}
	}
}

// psqlCmd builds a psql invocation over TCP (the path Vault uses), with no
// inherited PG* settings and no ~/.psqlrc.
func (p *Postgres) psqlCmd(user, password, db, sql string) *exec.Cmd {
	cmd := exec.Command(p.psql, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
		"-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", user, "-d", db, "-c", sql)
	cmd.Dir = os.TempDir()
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "PGPASSWORD=" + password, "PGCONNECT_TIMEOUT=5",
		"PGSSLMODE=disable", "PGAPPNAME=vaulttest", "HOME=" + os.TempDir()}
	return cmd
}

// Exec runs SQL as the superuser in database db and returns psql's unaligned,
// tuples-only output (trimmed). Bounded at 30 s.
func (p *Postgres) Exec(db, sql string) (string, error) {
	out, err := runBounded(p.psqlCmd(p.User, p.Password, db, sql), 30*time.Second)
	if err != nil {
		return "", fmt.Errorf("psql %q: %w: %s", sql, err, strings.TrimSpace(out))
	}
	return strings.TrimSpace(out), nil
}

// RoleExists reports whether a role (user) named name exists in pg_roles.
func (p *Postgres) RoleExists(name string) (bool, error) {
	out, err := p.Exec("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = "+quoteLiteral(name))
	if err != nil {
		return false, err
	}
	return out == "1", nil
}

// CanLogin connects as user/password to PostgresDB over TCP (scram-sha-256)
// and reads public.items, which Vault's creation statements grant SELECT on.
func (p *Postgres) CanLogin(user, password string) error {
	out, err := runBounded(p.psqlCmd(user, password, p.Database, "SELECT name FROM items WHERE id = 1"), 30*time.Second)
	if err != nil {
		return fmt.Errorf("login as %s: %w: %s", user, err, strings.TrimSpace(out))
	}
	if got := strings.TrimSpace(out); got != "one" {
		return fmt.Errorf("login as %s: SELECT from items returned %q", user, got)
	}
	return nil
}

// CanConnectURL connects with a libpq connection URL, as an application
// reads it from a rendered file, and reads public.items.
func (p *Postgres) CanConnectURL(url string) error {
	cmd := exec.Command(p.psql, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", "SELECT name FROM items WHERE id = 1")
	cmd.Dir = os.TempDir()
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "PGCONNECT_TIMEOUT=5", "HOME=" + os.TempDir()}
	out, err := runBounded(cmd, 30*time.Second)
	if err != nil {
		return fmt.Errorf("connect with the URL: %w: %s", err, strings.TrimSpace(out))
	}
	if got := strings.TrimSpace(out); got != "one" {
		return fmt.Errorf("connect with the URL: SELECT from items returned %q", got)
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// runBounded runs cmd, returning combined output; it is killed after limit.
func runBounded(cmd *exec.Cmd, limit time.Duration) (string, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done //nolint:errcheck // the killed process's exit status says nothing more
		return out.String(), fmt.Errorf("timed out after %s", limit)
	}
}

// EnableDatabase mounts the database secrets engine at database/ (once),
// points connection "pg" at pg through the builtin
// postgresql-database-plugin (superuser credentials, sslmode=disable), and
// creates role `role`: a LOGIN role valid until the lease expires, with
// SELECT on PostgresDB's public tables, default_ttl ttl and max_ttl maxTTL.
// Revoking a lease runs the plugin's default revocation, which drops the role.
//
// database/creds/<role> then returns data {username, password} with a
// renewable lease (LeaseID "database/creds/<role>/<id>", LeaseDuration ttl).
func (s *Server) EnableDatabase(t testing.TB, pg *Postgres, role string, ttl, maxTTL time.Duration) {
	t.Helper()
	if err := s.ConfigureDatabase(pg, role, ttl, maxTTL); err != nil {
		t.Fatal(err)
	}
}

// DatabaseMount and DatabaseConnection are where EnableDatabase configures Vault.
const (
	DatabaseMount      = "database"
	DatabaseConnection = "pg"
)

// ConfigureDatabase is EnableDatabase without a testing.TB. Calling it again
// with another role adds that role to the connection's allowed_roles.
func (s *Server) ConfigureDatabase(pg *Postgres, role string, ttl, maxTTL time.Duration) error {
	mounts, err := s.Root.Sys().ListMounts()
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	if _, ok := mounts[DatabaseMount+"/"]; !ok {
		if err := s.Root.Sys().Mount(DatabaseMount, &vault.MountInput{Type: "database"}); err != nil {
			return fmt.Errorf("mount database: %w", err)
		}
	}
	cfgPath := DatabaseMount + "/config/" + DatabaseConnection
	allowed := []string{role}
	if sec, err := s.Root.Logical().Read(cfgPath); err == nil && sec != nil {
		if prev, ok := sec.Data["allowed_roles"].([]any); ok {
			for _, r := range prev {
				if r, ok := r.(string); ok && r != role {
					allowed = append(allowed, r)
				}
			}
		}
	}
	if _, err := s.Root.Logical().Write(cfgPath, map[string]any{
		"plugin_name":    "postgresql-database-plugin",
		"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@%s/%s?sslmode=disable", pg.Addr(), pg.Database),
		"username":       pg.User,
		"password":       pg.Password,
		"allowed_roles":  allowed,
		// Keep the superuser password as is: the tests use it too.
		"verify_connection": true,
	}); err != nil {
		return fmt.Errorf("configure database connection: %w", err)
	}
	if _, err := s.Root.Logical().Write(DatabaseMount+"/roles/"+role, map[string]any{
		"db_name": DatabaseConnection,
		"creation_statements": []string{
			`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
			`GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";`,
		},
		"default_ttl": int(ttl.Seconds()),
		"max_ttl":     int(maxTTL.Seconds()),
	}); err != nil {
		return fmt.Errorf("create database role %s: %w", role, err)
	}
	return nil
}
