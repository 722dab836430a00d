import { expect } from 'chai';
import { termsOf, tokenize } from '../../kdn/retrieval/analyzer.ts';
import { ChunkIndex } from '../../kdn/retrieval/chunk-index.ts';

function doc(id: string, chunks: string[], namespace = 'ns') {
  return { id, namespace, title: `${id}.txt`, chunks: chunks.map((text, index) => ({ index, text })) };
}

describe('retrieval analysis', () => {
  it('keeps options as terms with their case, and splits them into stemmed words', () => {
    expect(tokenize('use -S or --sort=WORD, not e-mail')).to.deep.equal(['use', '-S', 'or', '--sort', 'WORD', 'not', 'e', 'mail']);
    expect(termsOf('--ignore-case')).to.deep.equal(['--ignore-case', 'ignor', 'case']);
    expect(termsOf('-S')).to.deep.equal(['-S']);
    expect(termsOf('-s')).to.deep.equal(['-s']);
  });

  it('drops stop-words and stems inflections to the same term', () => {
    expect(termsOf('the')).to.deep.equal([]);
    expect(termsOf('does')).to.deep.equal([]);
    expect(termsOf('recursively')).to.deep.equal(termsOf('recursive'));
    expect(termsOf('Sorting')).to.deep.equal(termsOf('sort'));
  });
});

describe('ChunkIndex', () => {
  it('finds the option an inflected question word names, over boilerplate full of common words', () => {
    const index = new ChunkIndex();
    index.add(
      doc('ls', [
        'This is the manual. It is what it is, and all of it is here for you to read if you want to do it.',
        '-R, --recursive\n    list subdirectories recursively\n-S  sort by file size, largest first',
        'Exit status: 0 if OK, 1 if minor problems, 2 if serious trouble.',
      ]),
    );
    expect(index.search('ns', 'How do I list the directories recursively?', 1)[0]?.index).to.equal(1);
    expect(index.search('ns', 'What is the exit status for serious trouble?', 1)[0]?.index).to.equal(2);
  });

  it('does not expand short terms by prefix', () => {
    const index = new ChunkIndex();
    index.add(doc('d', ['the lsblk command lists block devices', 'ls lists a directory']));
    const hits = index.search('ns', 'ls', 4);
    expect(hits.map((h) => h.index)).to.deep.equal([1]);
  });

  it("never returns another namespace's chunks, and forgets removed documents", () => {
    const index = new ChunkIndex();
    const a = doc('a', ['gzip keeps the input file with --keep'], 'one');
    index.add(a);
    index.add(doc('b', ['gzip keeps the input file with --keep'], 'two'));
    expect(index.search('one', 'keep input', 4).map((h) => h.docId)).to.deep.equal(['a']);
    index.remove(a);
    expect(index.search('one', 'keep input', 4)).to.deep.equal([]);
  });
});
